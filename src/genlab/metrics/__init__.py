"""Metric glue: torch-fidelity feature extractors and text metrics."""
