"""A shuffling sampler that owns its random stream, so a checkpoint can resume the exact batch order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


class ResumableRandomSampler(DistributedSampler):
    """Yields a fresh permutation of `range(num_samples)` each epoch, drawn from its own `torch.Generator`.

    The order of epoch `e` depends only on `seed` and `e`: the generator's state at the start of an epoch
    draws that epoch's permutation, and the state after drawing it starts the next epoch. `state_dict()`
    holds that start state, the epoch and `position` (indices handed out so far in the epoch), so a
    resumed run skips what was already seen and continues the same stream. `position` counts what the
    DataLoader pulled: it equals the consumed batches when `num_workers=0` (workers prefetch ahead).

    Lightning calls `set_epoch` at the start of every epoch; without it (a plain loop), iterating again
    after a finished epoch moves to the next one. A new pass over an unfinished epoch (someone peeked at
    a batch) starts that epoch again from its first index; only `load_state_dict` makes the next pass
    continue from the saved position.

    Under DDP each rank takes every `world_size`-th index of the same permutation (the order padded with
    its first indices to a multiple of the world size, as DistributedSampler does), and `position` counts
    that rank's share. Being a DistributedSampler, it is not wrapped (and reshuffled) by Lightning; rank
    0's state, which the checkpoint holds, is every rank's, since the ranks move in lockstep.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        # DistributedSampler's own __init__ needs a process group; the shard is read when iterating
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle, self.drop_last = True, False
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0
        self._resuming = False  # set by load_state_dict: the next pass starts at `position`

    @property
    def num_replicas(self) -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return  # already there (a resumed epoch keeps its position)
        if epoch < self.epoch:  # going back (a new fit on the same datamodule): replay from the seed
            self.generator.manual_seed(self.seed)
            self.epoch, self.position = 0, 0
        while self.epoch < epoch:
            self._advance()

    def _advance(self) -> None:
        torch.randperm(self.num_samples, generator=self.generator)  # the finished epoch's draw
        self.epoch += 1
        self.position = 0

    def __iter__(self) -> Iterator[int]:
        if self.position >= len(self):
            self._advance()
        start, self._resuming = (self.position if self._resuming else 0), False
        # draw from a copy: the generator stays at this epoch's start until the epoch changes
        order = torch.randperm(self.num_samples, generator=self._copy()).tolist()
        world = self.num_replicas
        order = (order + order[: len(self) * world - len(order)])[self.rank :: world]
        self.position = start
        for index in order[start:]:
            self.position += 1
            yield index

    def _copy(self) -> torch.Generator:
        copy = torch.Generator()
        copy.set_state(self.generator.get_state())
        return copy

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_samples"] != self.num_samples:
            raise ValueError(f"sampler state is for {state['num_samples']} samples, not {self.num_samples}")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.generator.set_state(state["generator"])
        self._resuming = True
