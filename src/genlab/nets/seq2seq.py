"""An encoder-decoder Transformer (pre-LN, one token embedding shared by encoder, decoder and output layer) with a
key/value cache for decoding one position at a time."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nets import check_sizes
from genlab.nets.gpt import MLP  # the same feed-forward layer as the GPT's


class LayerCache:
    """What one decoder layer has computed so far for a batch of sequences being decoded: the keys and values of
    its self-attention for every position up to `max_len`, and those of its cross-attention over the encoder
    output (computed at the first step, the same for every step after)."""

    def __init__(self, batch_size: int, n_head: int, head_size: int, max_len: int):
        self.shape = (batch_size, n_head, max_len, head_size)
        self.keys: Tensor | None = None
        self.values: Tensor | None = None
        self.length = 0  # positions stored
        self.cross: tuple[Tensor, Tensor] | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new positions' `k`, `v` (B, nh, T, hs); return those of all positions (B, nh, P + T, hs)."""
        if self.keys is None:  # allocated on first use, in the dtype of the keys (autocast)
            self.keys, self.values = k.new_zeros(self.shape), v.new_zeros(self.shape)
        end = self.length + k.size(2)
        if end > self.shape[2]:
            raise ValueError(f"decoder cache holds {self.shape[2]} positions, {end} requested")
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def reorder(self, index: Tensor) -> None:
        """Keep the sequences `index` (beam search: the beams that survive a step, each from its own source, so
        the cross-attention keys, the same for all beams of one source, stay as they are)."""
        if self.keys is not None:
            self.keys = self.keys.index_select(0, index)
            self.values = self.values.index_select(0, index)


class Attention(nn.Module):
    """Multi-head attention of queries from `x` over keys and values projected from `context` (`x` itself in
    self-attention, the encoder output in cross-attention)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.n_embd = n_embd
        self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.kv_proj = nn.Linear(n_embd, 2 * n_embd, bias=bias)  # key and value for all heads at once
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def heads(self, x: Tensor) -> Tensor:
        B, T, C = x.size()
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def keys_values(self, context: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv_proj(context).split(self.n_embd, dim=2)
        return self.heads(k), self.heads(v)  # (B, nh, S, hs) each

    def forward(
        self, x: Tensor, kv: tuple[Tensor, Tensor], attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        B, T, C = x.size()
        q = self.heads(self.q_proj(x))  # (B, nh, T, hs)
        k, v = kv
        # no dropout on the attention weights: with a causal mask torch's CPU kernel then takes a path ~10x slower
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class EncoderBlock(nn.Module):
    """x + self_attn(ln(x)) over the source's real tokens, then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = Attention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, self.attn.keys_values(h), attn_mask=src_mask)
        return x + self.mlp(self.ln_2(x))


class DecoderBlock(nn.Module):
    """x + causal self_attn(ln(x)), then x + cross_attn(ln(x), encoder output), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.self_attn = Attention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.cross_attn = Attention(n_embd, n_head, dropout, bias)
        self.ln_3 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: Tensor, memory: Tensor, src_mask: Tensor, cache: LayerCache | None = None) -> Tensor:
        T = x.size(1)
        h = self.ln_1(x)
        k, v = self.self_attn.keys_values(h)  # (B, nh, T, hs)
        attn_mask, is_causal = None, True
        if cache is not None:
            P = cache.length  # positions decoded before these, all in their past
            k, v = cache.append(k, v)  # (B, nh, P + T, hs)
            if T == 1:
                is_causal = False  # the one new query sees every cached position
            elif P > 0:  # query i sits at position P + i: it sees keys 0..P + i
                attn_mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
                is_causal = False
        x = x + self.self_attn(h, (k, v), attn_mask=attn_mask, is_causal=is_causal)

        if cache is not None and cache.cross is not None:
            cross = cache.cross
        else:
            cross = self.cross_attn.keys_values(memory)  # (B, nh, S, hs): the encoder output does not change
            if cache is not None:
                cache.cross = cross
        x = x + self.cross_attn(self.ln_2(x), cross, attn_mask=src_mask)
        return x + self.mlp(self.ln_3(x))


class Seq2SeqTransformer(nn.Module):
    """Encoder and decoder stacks of pre-norm blocks over one token embedding, which the output layer shares
    (tied weights: source and target come from one joint vocabulary). Learned positions, one table per side.

    The net knows no special token: callers pass the source's padding as `src_mask` and start the target with
    their own begin-of-sequence id.
    """

    def __init__(
        self,
        vocab_size: int,  # tokens of the joint vocabulary, special ones included (the datamodule publishes it)
        block_size: int,  # longest source and longest target, in tokens; position tables have this many rows
        n_encoder_layer: int = 3,
        n_decoder_layer: int = 3,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.1,  # on residual branches and embeddings
        bias: bool = False,  # biases in Linear and LayerNorm layers
    ):
        super().__init__()
        check_sizes(
            "model.net",
            block_size=block_size,
            n_encoder_layer=n_encoder_layer,
            n_decoder_layer=n_decoder_layer,
            n_head=n_head,
            n_embd=n_embd,
        )
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_head = n_head
        self.n_embd = n_embd
        self.wte = nn.Embedding(vocab_size, n_embd)  # shared by source, target and output layer
        self.wpe_src = nn.Embedding(block_size, n_embd)
        self.wpe_tgt = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(
            [EncoderBlock(n_embd, n_head, dropout, bias) for _ in range(n_encoder_layer)]
        )
        self.ln_enc = nn.LayerNorm(n_embd, bias=bias)
        self.decoder = nn.ModuleList(
            [DecoderBlock(n_embd, n_head, dropout, bias) for _ in range(n_decoder_layer)]
        )
        self.ln_dec = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying

        self.apply(self._init_weights)
        n_layer = n_encoder_layer + n_decoder_layer
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: residual projections scaled down with depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @staticmethod
    def attention_mask(src_mask: Tensor) -> Tensor:
        """(B, S) True at real source tokens -> (B, 1, 1, S), broadcast over heads and queries."""
        return src_mask[:, None, None, :]

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        """The encoder output (B, S, n_embd) of source ids `src` (B, S); `src_mask` (B, S) is True at real tokens."""
        S = src.size(1)
        if self.block_size < S:
            raise ValueError(f"source of {S} tokens is longer than block_size={self.block_size}")
        pos = torch.arange(S, device=src.device)
        x = self.drop(self.wte(src) + self.wpe_src(pos))  # (B, S, n_embd)
        mask = self.attention_mask(src_mask)
        for block in self.encoder:
            x = block(x, mask)
        return self.ln_enc(x)

    def make_cache(self, batch_size: int) -> list[LayerCache]:
        """An empty cache per decoder layer for `batch_size` sequences of up to `block_size` positions."""
        hs = self.n_embd // self.n_head
        return [LayerCache(batch_size, self.n_head, hs, self.block_size) for _ in self.decoder]

    def decode(
        self, tgt: Tensor, memory: Tensor, src_mask: Tensor, cache: list[LayerCache] | None = None
    ) -> Tensor:
        """Next-token logits (B, T, vocab_size) for target ids `tgt` (B, T) given the encoder output `memory`.

        With `cache`, `tgt` holds only the new positions: they follow the cached ones and are appended to it.
        """
        T = tgt.size(1)
        start = cache[0].length if cache is not None else 0
        if start + T > self.block_size:
            raise ValueError(f"target of {start + T} tokens is longer than block_size={self.block_size}")
        pos = torch.arange(start, start + T, device=tgt.device)
        x = self.drop(self.wte(tgt) + self.wpe_tgt(pos))  # (B, T, n_embd)
        mask = self.attention_mask(src_mask)
        for i, block in enumerate(self.decoder):
            x = block(x, memory, mask, cache[i] if cache is not None else None)
        return self.lm_head(self.ln_dec(x))  # (B, T, vocab_size)

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Teacher forcing: logits (B, T, vocab_size) of the token after each of `tgt` (B, T), given `src` (B, S)."""
        if src_mask is None:
            src_mask = torch.ones_like(src, dtype=torch.bool)
        return self.decode(tgt, self.encode(src, src_mask), src_mask)

    def num_parameters(self) -> int:
        """Parameters counted once (the output layer is the token embedding)."""
        return sum(p.numel() for p in self.parameters())
