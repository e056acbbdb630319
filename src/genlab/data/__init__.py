"""Datamodules: images and text, with deterministic splits and resumable sampling."""
