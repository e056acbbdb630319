"""Noise schedules and samplers for diffusion models: pure torch, no Lightning."""
