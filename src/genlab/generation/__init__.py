"""What `genlab sample` does with a loaded module: image grids and files, latent interpolations, streamed text.

Each part uses only the family protocols of `genlab.models.base`, never a family's class.
"""
