"""genlab's Hydra sweeper on Optuna's ask/tell API (`hydra/sweeper=genlab_optuna`), with resumable SQLite studies."""
