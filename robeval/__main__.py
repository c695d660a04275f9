"""``python -m robeval``: the same as the ``robeval`` command."""

from robeval.entry import main

main()
