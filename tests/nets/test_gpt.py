"""GPT network: shapes, causality, weight tying, and the KV cache against full forward passes."""

from __future__ import annotations

import pytest
import torch

from genlab.nets.gpt import GPT


def tiny_gpt(**kwargs) -> GPT:
    torch.manual_seed(0)
    args = {"vocab_size": 11, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}
    args.update(kwargs)
    return GPT(**args).eval()


def test_logits_shape_and_weight_tying():
    net = tiny_gpt()
    logits = net(torch.randint(11, (3, 7)))
    assert logits.shape == (3, 7, 11)
    assert net.lm_head.weight is net.wte.weight
    assert net.num_parameters() == sum(p.numel() for p in set(net.parameters()))
    with pytest.raises(ValueError, match="block_size"):
        net(torch.zeros(1, 17, dtype=torch.long))


def test_causal_future_tokens_do_not_change_earlier_logits():
    net = tiny_gpt()
    idx = torch.randint(11, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 11
    a, b = net(idx), net(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_kv_cache_matches_full_forward_one_token_at_a_time():
    net = tiny_gpt().double()
    idx = torch.randint(11, (2, 16))
    full = net(idx)
    cache = net.make_kv_cache(batch_size=2)
    # a prefill of 5 positions, one chunk of 3 (mask with an offset), then single tokens
    steps = [net(idx[:, :5], kv_cache=cache), net(idx[:, 5:8], kv_cache=cache)]
    steps += [net(idx[:, t : t + 1], kv_cache=cache) for t in range(8, 16)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    assert cache[0].length == 16
    with pytest.raises(ValueError, match="block_size"):
        net(idx[:, :1], kv_cache=cache)


def test_dropout_only_in_training():
    net = tiny_gpt(dropout=0.5)
    idx = torch.randint(11, (2, 8))
    torch.testing.assert_close(net(idx), net(idx))
    net.train()
    assert not torch.allclose(net(idx), net(idx))


def test_kv_cache_under_autocast():
    net = tiny_gpt()
    idx = torch.randint(11, (1, 6))
    cache = net.make_kv_cache(batch_size=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(idx[:, :5], kv_cache=cache)
        logits = net(idx[:, 5:], kv_cache=cache)
    assert cache[0].keys.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), net(idx)[:, 5:], atol=0.05, rtol=0.05)
