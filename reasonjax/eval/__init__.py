"""Metrics (accuracy, unbiased pass@k, coverage fits), reports and plots."""
