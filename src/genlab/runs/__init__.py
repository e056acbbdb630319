"""Run directories: the run record, compare and reproduce."""
