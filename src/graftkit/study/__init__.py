"""Experiment harness: merge zoo experts, score the results, report and plot them."""
