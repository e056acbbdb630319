"""LightningModules, one file per family; base.py holds the shared protocols."""
