"""CausalLM's evaluation metrics under DDP: perplexity and loss reduce over every token of every rank.

Two processes in a gloo group hold shards of unequal size (3 windows and 1), where the mean of the per-rank
values and the value over all tokens differ; each rank must report the value over all tokens.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from genlab.models.lm import CausalLM
from genlab.nets.gpt import GPT

VOCAB, BLOCK, WINDOWS = 11, 8, 4
SHARDS = [slice(0, 3), slice(3, 4)]  # rank 0: 3 windows, rank 1: 1 window


def _tiny_lm() -> CausalLM:
    torch.manual_seed(0)
    return CausalLM(GPT(VOCAB, BLOCK, n_layer=1, n_head=2, n_embd=16))


def _windows() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(VOCAB, (WINDOWS, BLOCK + 1), generator=torch.Generator().manual_seed(1))
    return tokens[:, :-1], tokens[:, 1:]


def _rank(rank: int, world: int, port: int, out: str) -> None:
    """One DDP rank: its shard through the module's own metric, reduced as Lightning reduces `val/loss`."""
    from lightning.fabric.utilities.distributed import _sync_ddp_if_available
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        module = _tiny_lm().eval()
        x, y = (t[SHARDS[rank]] for t in _windows())
        with torch.no_grad():
            logits = module(x)
        module.val_ppl.update(logits, y)
        # the arguments CausalLM._evaluate gives self.log; DDPStrategy.reduce is _sync_ddp_if_available
        results = _ResultCollection(training=False)
        results.log(
            "validation_step",
            "val/loss",
            module.nll(logits, y),
            on_step=False,
            on_epoch=True,
            batch_size=x.size(0),
            sync_dist=True,
            sync_dist_fn=_sync_ddp_if_available,
        )
        loss = results["validation_step.val/loss"].compute()
        values = {"ppl": module.val_ppl.compute().item(), "loss": loss.item()}
        Path(out, f"rank{rank}.json").write_text(json.dumps(values))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not torch.distributed.is_gloo_available() or "fork" not in mp.get_all_start_methods(),
    reason="needs torch.distributed with gloo, and fork",
)
def test_ppl_and_loss_reduce_over_all_tokens_of_all_ranks(tmp_path: Path):
    # fork: the ranks start in a moment instead of importing torch and Lightning again
    mp.start_processes(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    # single process, all windows: NLL summed over every token, divided by the token count
    module = _tiny_lm().eval()
    x, y = _windows()
    with torch.no_grad():
        logits = module(x)
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    loss = nll / y.numel()
    for rank in ranks:  # every rank reports the global values, not its own
        assert rank["loss"] == pytest.approx(loss, rel=1e-5)
        assert rank["ppl"] == pytest.approx(math.exp(loss), rel=1e-5)

    # the test can tell: the mean of the two shards' own values is another number
    with torch.no_grad():
        shard_losses = [module.nll(module(x[s]), y[s]).item() for s in SHARDS]
    assert abs(sum(shard_losses) / 2 - loss) > 1e-3
    assert abs(sum(math.exp(v) for v in shard_losses) / 2 - math.exp(loss)) > 1e-3
