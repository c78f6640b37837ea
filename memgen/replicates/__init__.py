"""Replicates over seeds and the claims scorecard: the paper's findings as tests with verdicts."""
