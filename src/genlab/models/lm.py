"""Autoregressive language models: next-token cross-entropy, perplexity and bits per token, KV-cached sampling."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.text import Perplexity

from genlab.models.base import GenerativeModule, OptimizerFactory, SchedulerFactory


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token id per row of `logits` (B, V) -> (B, 1). `temperature=0` decodes greedily."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token once the more likely ones already hold top_p of the mass (the first always stays)
        drop = probs.cumsum(dim=-1) - probs > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    if generator is not None and generator.device != probs.device:
        # a seeded CPU generator still decides when the model runs on a GPU
        return torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)


class CausalLM(GenerativeModule):
    """Trains a causal language model `net` (ids (B, T) -> logits (B, T, V)) on next-token prediction.

    Logs `train/loss`, and per evaluation split `loss` (mean NLL per token, in nats), `ppl` (torchmetrics
    perplexity) and `bits_per_token` (bits per character with the char tokenizer). Under DDP all three cover
    every token of every rank: the perplexity sums NLL and token counts over ranks (torchmetrics states), and
    the synced loss is Lightning's batch-size-weighted mean, whose sums and counts are reduced alike.
    """

    modality = "text"

    def __init__(
        self,
        net: nn.Module,  # e.g. genlab.nets.gpt.GPT: needs `block_size` and `make_kv_cache(batch_size)`
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ):
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.tokenizer = None  # text <-> ids for encode/decode/generate_text; set by genlab.load, not saved
        self.val_ppl = Perplexity()
        self.test_ppl = Perplexity()

    def forward(self, idx: Tensor) -> Tensor:
        return self.net(idx)

    @staticmethod
    def nll(logits: Tensor, targets: Tensor) -> Tensor:
        """Mean negative log-likelihood per token, in nats."""
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.nll(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.size(0))
        return loss

    def on_validation_epoch_start(self) -> None:
        # fresh states in this loop's grad mode: states left by an inference-mode `validate()` are inference
        # tensors, which the no-grad validation inside `fit()` may not update in place
        self.val_ppl.reset()

    def on_test_epoch_start(self) -> None:
        self.test_ppl.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_ppl)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_ppl)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, ppl: Perplexity) -> None:
        x, y = batch
        logits = self.net(x)
        loss = self.nll(logits, y)
        ppl.update(logits.float(), y)
        # every window has the same length, so weighting by windows is weighting by tokens
        log = {"batch_size": x.size(0), "on_epoch": True, "on_step": False, "sync_dist": True}
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", **log)
        self.log(f"{stage}/bits_per_token", loss / math.log(2), **log)
        self.log(f"{stage}/ppl", ppl, on_epoch=True, on_step=False)

    def configure_optimizers(self):
        # as nanoGPT: weight decay on matrices (Linear, Embedding) only, never on norms and biases
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return self.build_optimizer(groups)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """The prompt followed by `max_new_tokens` sampled tokens: (T,) -> (T + new,), or (B, T) -> (B, T + new).

        With the cache each new token runs through the net as one position. When the context reaches
        `block_size`, the cache restarts from the last `block_size // 2` tokens; `use_cache=False` feeds
        the very same contexts in full, so both give identical tokens under greedy decoding.
        """
        squeeze = prompt_ids.dim() == 1
        idx = (prompt_ids[None] if squeeze else prompt_ids).to(self.device, torch.long)
        new = list(self.stream(idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache))
        if new:
            idx = torch.cat([idx, torch.stack(new, dim=1)], dim=1)
        return idx[0] if squeeze else idx

    @torch.no_grad()
    def stream(
        self,
        prompt_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Iterator[Tensor]:
        """`generate`, one step at a time: yields each new token as it is drawn, (B,) for a (B, T) prompt
        (a scalar tensor for a (T,) prompt), so a caller can print text while it is generated."""
        squeeze = prompt_ids.dim() == 1
        idx = (prompt_ids[None] if squeeze else prompt_ids).to(self.device, torch.long)
        if idx.size(1) == 0:
            raise ValueError("generate needs a prompt of at least one token")
        block_size = self.net.block_size
        keep = max(1, block_size // 2)
        start = max(0, idx.size(1) - block_size)  # the context is idx[:, start:]
        cache = None

        was_training = self.net.training
        self.net.eval()
        try:
            for _ in range(max_new_tokens):
                if idx.size(1) - start > block_size:
                    start, cache = idx.size(1) - keep, None  # window full: restart from its second half
                if not use_cache:
                    logits = self.net(idx[:, start:])
                elif cache is None:
                    cache = self.net.make_kv_cache(idx.size(0))
                    logits = self.net(idx[:, start:], kv_cache=cache)  # prefill the context
                else:
                    logits = self.net(idx[:, -1:], kv_cache=cache)  # (B, 1, V): only the newest token
                next_id = sample_next_token(logits[:, -1], temperature, top_k, top_p, generator)  # (B, 1)
                idx = torch.cat([idx, next_id], dim=1)
                yield next_id[0, 0] if squeeze else next_id[:, 0]
        finally:
            self.net.train(was_training)

    # ---- text, for a module that was given its run's tokenizer (`genlab.load` does) -------------------------

    def encode(self, text: str) -> Tensor:
        """Token ids (T,) of `text` with `self.tokenizer`."""
        return torch.as_tensor(self._tokenizer().encode(text), dtype=torch.long)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The text of token ids (any shape, read in order) with `self.tokenizer`."""
        return self._tokenizer().decode(torch.as_tensor(ids).flatten().tolist())

    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> str:
        """The continuation of `prompt` (without the prompt), as text."""
        prompt_ids = self.encode(prompt)
        ids = self.generate(prompt_ids, max_new_tokens, temperature, top_k, top_p, generator)
        return self.decode(ids[len(prompt_ids) :])

    def _tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(
                "this module has no tokenizer: load it with genlab.load(run_dir), or set .tokenizer "
                "(genlab.data.tokenizers.load_tokenizer(run_dir))"
            )
        return self.tokenizer
