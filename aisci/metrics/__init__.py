"""Metrics computed on the host from sums accumulated by `eval_step`."""
