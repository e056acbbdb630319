"""genlab's Hydra search-path plugin: the packaged configs and the user's config folder for `genlab` commands."""
