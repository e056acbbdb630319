"""The train sampler under DDP: one permutation, split by rank, resumable per rank."""

from __future__ import annotations

from torch.utils.data import DistributedSampler

import genlab.data.sampling as sampling
from genlab.data.sampling import ResumableRandomSampler


class FakeGroup:
    """torch.distributed as a rank of a `world`-process group sees it."""

    def __init__(self, world: int, rank: int):
        self.world, self.rank_ = world, rank

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def get_world_size(self):
        return self.world

    def get_rank(self):
        return self.rank_


def epoch_order(monkeypatch, world: int, rank: int, n: int = 11, epoch: int = 1) -> list[int]:
    monkeypatch.setattr(sampling, "dist", FakeGroup(world, rank))
    sampler = ResumableRandomSampler(n, seed=5)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_ranks_split_the_single_process_permutation(monkeypatch):
    whole = epoch_order(monkeypatch, 1, 0)
    assert sorted(whole) == list(range(11))
    shards = [epoch_order(monkeypatch, 2, rank) for rank in (0, 1)]
    assert [len(s) for s in shards] == [6, 6]  # 11 padded to 12, as DistributedSampler does
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2] + whole[:1]
    assert set(shards[0]) | set(shards[1]) == set(range(11))


def test_a_rank_resumes_its_own_shard_mid_epoch(monkeypatch):
    monkeypatch.setattr(sampling, "dist", FakeGroup(2, 1))
    sampler = ResumableRandomSampler(11, seed=5)
    sampler.set_epoch(2)
    seen = iter(sampler)
    first = [next(seen) for _ in range(4)]
    state = sampler.state_dict()
    assert (state["epoch"], state["position"]) == (2, 4)  # this rank's share, not the whole epoch

    resumed = ResumableRandomSampler(11, seed=5)
    resumed.load_state_dict(state)
    assert first + list(resumed) == epoch_order(monkeypatch, 2, 1, epoch=2)


def test_lightning_leaves_it_alone_under_ddp():
    # Lightning wraps (and reshuffles) any sampler that is not a DistributedSampler
    assert isinstance(ResumableRandomSampler(4, seed=0), DistributedSampler)
