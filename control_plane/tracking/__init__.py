"""Experiment tracking: experiments, runs, parameters, metrics, artifacts, comparison."""
