"""genlab: config-driven experiments for generative models."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(path: Any, device: str = "auto", weights: str = "auto", **kwargs: Any) -> Any:
    """The trained module of a run dir or checkpoint, in eval mode: see `genlab.runs.loading.load`.

    Defined here, importing torch only when called, so that `import genlab` stays light.
    """
    from genlab.runs.loading import load as _load

    return _load(path, device=device, weights=weights, **kwargs)
