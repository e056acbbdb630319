"""Drawing samples for the image metrics: one process, and n split over a 2-process gloo group and gathered."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from genlab.metrics.sampling import broadcast_from_rank_zero, draw, draw_across_ranks


class Counter:
    """An ImageGenerator whose images are constant, valued by the rank that drew them and a running count
    (so each image says where it came from), with one random pixel from the caller's generator."""

    def __init__(self, rank: int = 0):
        self.rank, self.drawn, self.calls = rank, 0, []

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        self.calls.append(n)
        index = torch.arange(self.drawn, self.drawn + n, dtype=torch.float32)
        self.drawn += n
        images = ((self.rank * 100 + index) / 255).view(n, 1, 1, 1).repeat(1, 1, 4, 4)
        images[:, 0, 0, 0] = torch.rand(n, generator=generator)
        return images


def test_draw_gives_n_uint8_images_in_batches_from_the_seeded_generator():
    model = Counter()
    images = draw(model, 10, 4, torch.Generator().manual_seed(5))
    assert images.dtype == torch.uint8 and images.shape == (10, 1, 4, 4)
    assert model.calls == [4, 4, 2]
    assert images[:, 0, 1, 1].tolist() == list(range(10))
    again = draw(Counter(), 10, 4, torch.Generator().manual_seed(5))
    assert torch.equal(images, again)  # same seed, same draws


def _rank(rank: int, world: int, port: int, n: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = Counter(rank)
        images = draw_across_ranks(model, n=n, batch_size=3, seed=7)
        value = broadcast_from_rank_zero({"fid": 1.5} if rank == 0 else None)
        queue.put((rank, model.calls, images[:, 0, 1, 1].tolist(), images.shape[0], value))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_draw_equal_shares_and_all_hold_exactly_n_samples():
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    n, world = 11, 2
    mp.start_processes(_rank, args=(world, free_port(), n, queue), nprocs=world, start_method="spawn")
    results = sorted(queue.get() for _ in range(world))
    for rank, calls, values, count, broadcast in results:
        assert calls == [3, 3], (
            rank
        )  # ceil(11 / 2) = 6 each, in equal batches (a sharded forward is collective)
        assert count == n  # the surplus image of the last rank is dropped
        # rank 0's six images, then rank 1's first five: every rank holds the same gathered set
        assert values == [0, 1, 2, 3, 4, 5, 100, 101, 102, 103, 104]
        assert broadcast == {"fid": 1.5}  # every rank logs rank 0's values
