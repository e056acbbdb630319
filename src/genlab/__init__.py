"""genlab: config-driven experiments for generative models."""

__version__ = "0.1.0"
