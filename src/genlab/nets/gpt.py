"""A decoder-only Transformer (GPT) with an optional key/value cache for one-position-per-token generation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nets import check_sizes


class KVCache:
    """Keys and values of every position seen so far by one attention layer, for up to `max_len` positions.

    The buffers are allocated on the first `append`, with the dtype and device of the keys it receives,
    so the cache also works under autocast (bf16 keys from float32 weights).
    """

    def __init__(self, batch_size: int, n_head: int, head_size: int, max_len: int):
        self.shape = (batch_size, n_head, max_len, head_size)
        self.keys: Tensor | None = None
        self.values: Tensor | None = None
        self.length = 0  # positions stored

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new positions' `k`, `v` (B, nh, T, hs); return those of all positions (B, nh, P + T, hs)."""
        if self.keys is None:
            self.keys = k.new_zeros(self.shape)
            self.values = v.new_zeros(self.shape)
        end = self.length + k.size(2)
        if end > self.shape[2]:
            raise ValueError(f"KV cache holds {self.shape[2]} positions, {end} requested")
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.n_embd = n_embd
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # query, key, value for all heads at once
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        B, T, C = x.size()  # batch, new positions, n_embd
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)

        attn_mask, is_causal = None, True
        if kv_cache is not None:
            P = kv_cache.length  # positions already cached, all in the past of the new ones
            k, v = kv_cache.append(k, v)  # (B, nh, P + T, hs)
            if T == 1:
                is_causal = False  # one new query may see every cached position
            elif P > 0:
                # query i sits at position P + i: it sees keys 0..P + i (is_causal would align at the top left)
                attn_mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
                is_causal = False

        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """Token + learned position embeddings, `n_layer` pre-norm blocks, a final LayerNorm, and an output
    layer that shares its weights with the token embedding."""

    def __init__(
        self,
        vocab_size: int,  # tokens in the tokenizer (the datamodule publishes it)
        block_size: int,  # longest context; position embeddings exist only for 0..block_size-1
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,  # on attention weights, residual branches and embeddings
        bias: bool = False,  # biases in Linear and LayerNorm layers (nanoGPT: a bit better and faster without)
    ):
        super().__init__()
        check_sizes("model.net", block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd
        self.wte = nn.Embedding(vocab_size, n_embd)  # token embedding
        self.wpe = nn.Embedding(block_size, n_embd)  # position embedding
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(n_embd, n_head, dropout, bias) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        # weight tying: the same matrix embeds a token and scores it as the next one
        self.lm_head.weight = self.wte.weight

        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                # GPT-2: residual projections scaled down so the residual stream's variance stays put with depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def make_kv_cache(self, batch_size: int) -> list[KVCache]:
        """An empty cache per layer for `batch_size` sequences of up to `block_size` positions."""
        hs = self.n_embd // self.n_head
        return [KVCache(batch_size, self.n_head, hs, self.block_size) for _ in range(self.n_layer)]

    def forward(self, idx: Tensor, kv_cache: list[KVCache] | None = None) -> Tensor:
        """Next-token logits (B, T, vocab_size) for token ids `idx` (B, T).

        With `kv_cache`, `idx` holds only the new positions: they follow the cached ones, attend to them,
        and are appended to the cache.
        """
        B, T = idx.size()
        start = kv_cache[0].length if kv_cache is not None else 0
        if start + T > self.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)

        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, n_embd)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache[i] if kv_cache is not None else None)
        x = self.ln_f(x)
        return self.lm_head(x)  # (B, T, vocab_size)

    def num_parameters(self) -> int:
        """Parameters counted once (the tied output layer is the token embedding)."""
        return sum(p.numel() for p in self.parameters())
