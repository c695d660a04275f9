"""Spreading an evaluation or a training sweep over Ray tasks (the optional ``ray`` extra).

Nothing here imports Ray at import time; see :mod:`robeval.cluster.session`.
"""
