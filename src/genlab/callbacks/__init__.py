"""Lightning callbacks: sample grids, metrics, run record."""
