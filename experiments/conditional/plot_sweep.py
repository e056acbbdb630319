"""Conditional accuracy and FID of the cDDPM against the guidance scale w, from the reports of
`genlab eval -m ... model.guidance_scale=0,0.5,1,2,4 out=experiments/conditional/sweep` (one per w):
`python experiments/conditional/plot_sweep.py` writes guidance_sweep.png."""

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent


def value(metrics: dict, prefix: str) -> float:
    return next(v for k, v in metrics.items() if k.startswith(prefix) and not re.search(r"/class\d", k))


def main() -> None:
    reports = sorted(
        HERE.glob("sweep/model.guidance_scale=*.json"), key=lambda p: float(p.stem.split("=")[1])
    )
    w = [float(p.stem.split("=")[1]) for p in reports]
    metrics = [json.loads(p.read_text())["metrics"] for p in reports]
    fig, acc_axis = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
    acc_axis.plot(w, [value(m, "cond_acc/") for m in metrics], "o-", color="tab:blue")
    acc_axis.set(xlabel="guidance scale w", ylabel="conditional accuracy", ylim=(0, 1))
    fid_axis = acc_axis.twinx()
    fid_axis.plot(w, [value(m, "fid/") for m in metrics], "s--", color="tab:red")
    fid_axis.set_ylabel("FID (classifier-mnist5k, 500)", color="tab:red")
    fig.savefig(HERE / "guidance_sweep.png", dpi=120)


if __name__ == "__main__":
    main()
