"""Evaluation: the runner, its checks, and ``evaluate`` (``robeval run`` as a function)."""
