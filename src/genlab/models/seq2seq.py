"""Sequence-to-sequence models: teacher forcing with label smoothing, perplexity, greedy and beam-search translation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.text import Perplexity

from genlab.models.base import GenerativeModule, OptimizerFactory, SchedulerFactory


class Seq2Seq(GenerativeModule):
    """Trains an encoder-decoder `net` (genlab.nets.seq2seq.Seq2SeqTransformer) on batches of
    `{"src": (B, S), "tgt": (B, T)}` ids, `tgt` being `bos, tokens..., eos` and both padded with `pad_id`.

    Logs `train/loss` (cross-entropy with label smoothing), and per evaluation split `loss` (the plain mean NLL
    per target token, in nats: eos counts, padding does not), `ppl` and `bits_per_token`. BLEU and chrF come
    from the decoded text (genlab.callbacks.translations, `genlab eval`); `translate` decodes greedily or with
    beam search, with a key/value cache in the decoder.
    """

    modality = "seq2seq"
    net_names = ("net",)
    metric_modes = {
        "test/bleu": "max",
        "test/chrf": "max",
        "test/greedy_bleu": "max",
        "test/greedy_chrf": "max",
        "test/copy_bleu": "max",
        "test/copy_chrf": "max",
        "val/bleu": "max",
        "val/chrf": "max",
        "val/greedy_bleu": "max",
        "val/greedy_chrf": "max",
        "val/copy_bleu": "max",
        "val/copy_chrf": "max",
    }

    def __init__(
        self,
        net: nn.Module,
        label_smoothing: float = 0.1,  # of the training loss only; evaluation reports the plain NLL
        pad_id: int = -3,  # special ids; negative counts from the end of the vocabulary, as the datamodule
        bos_id: int = -2,  # (genlab.data.parallel) appends pad, bos and eos after the text tokens
        eos_id: int = -1,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ):
        super().__init__(optimizer, scheduler)
        if not 0.0 <= label_smoothing < 1.0:
            from genlab.errors import ConfigError

            raise ConfigError(f"model.label_smoothing={label_smoothing}: must be in [0, 1), e.g. 0.1")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.label_smoothing = label_smoothing
        vocab = net.vocab_size
        self.pad_id, self.bos_id, self.eos_id = (i % vocab for i in (pad_id, bos_id, eos_id))
        self.tokenizer = None  # text <-> ids for translate_text; set by genlab.load, not saved
        self.val_ppl = Perplexity(ignore_index=self.pad_id)
        self.test_ppl = Perplexity(ignore_index=self.pad_id)

    # ---- training -------------------------------------------------------------------------------------------

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        return self.net(src, tgt, src != self.pad_id)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        src, tgt = batch["src"], batch["tgt"]
        logits = self(src, tgt[:, :-1])  # (B, T-1, V): each position predicts the next target token
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            tgt[:, 1:].flatten(),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )
        self.log("train/loss", loss, prog_bar=True, batch_size=src.size(0))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_ppl.reset()  # fresh states in this loop's grad mode (see CausalLM)

    def on_test_epoch_start(self) -> None:
        self.test_ppl.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_ppl)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_ppl)

    def _evaluate(self, batch: dict[str, Tensor], stage: str, ppl: Perplexity) -> None:
        src, tgt = batch["src"], batch["tgt"]
        logits = self(src, tgt[:, :-1])
        targets = tgt[:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=self.pad_id)
        ppl.update(logits.float(), targets)
        # weighted by target tokens, so the epoch value is the mean over tokens, not over sentences
        tokens = int((targets != self.pad_id).sum())
        log = {"batch_size": tokens, "on_epoch": True, "on_step": False, "sync_dist": True}
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", **log)
        self.log(f"{stage}/bits_per_token", loss / math.log(2), **log)
        self.log(f"{stage}/ppl", ppl, on_epoch=True, on_step=False)

    def configure_optimizers(self):
        # weight decay on matrices (Linear, Embedding) only, as the language model does
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2]}]
        no_decay = [p for p in params if p.dim() < 2]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return self.build_optimizer(groups)

    # ---- translation ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def translate(
        self,
        src_ids: Tensor,
        max_new_tokens: int | None = None,
        beam_size: int = 1,
        length_penalty: float = 1.0,
        use_cache: bool = True,
    ) -> Tensor:
        """Target ids for source ids: (S,) -> (T,), or (B, S) padded with `pad_id` -> (B, T) padded with `pad_id`.

        The outputs hold neither bos nor eos. `beam_size=1` decodes greedily; larger beams keep that many
        hypotheses and return the one with the best `sum log p / length ** length_penalty` (length counts the
        eos; 0 ranks by the plain sum, which favours short outputs). At most `max_new_tokens` tokens (default
        and cap: the net's `block_size - 1`); `use_cache=False` reruns the decoder on the whole prefix each step.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size={beam_size} must be at least 1")
        squeeze = src_ids.dim() == 1
        src = (src_ids[None] if squeeze else src_ids).to(self.device, torch.long)
        if src.size(1) == 0:
            raise ValueError("translate needs a source of at least one token")
        limit = self.net.block_size - 1
        steps = limit if max_new_tokens is None else min(int(max_new_tokens), limit)
        was_training = self.net.training
        self.net.eval()
        try:
            if beam_size == 1:
                out = self.greedy_search(src, steps, use_cache)
            else:
                out = self.beam_search(src, steps, beam_size, length_penalty, use_cache)
        finally:
            self.net.train(was_training)
        return out[0] if squeeze else out

    def _next_log_probs(self, tokens: Tensor, memory: Tensor, src_mask: Tensor, cache) -> Tensor:
        """(B, V) log-probabilities of the token after `tokens` (B, t); pad and bos are never chosen."""
        if cache is None:
            logits = self.net.decode(tokens, memory, src_mask)[:, -1]
        else:
            logits = self.net.decode(tokens[:, -1:], memory, src_mask, cache)[:, -1]
        logits = logits.float()
        logits[:, [self.pad_id, self.bos_id]] = float("-inf")
        return logits.log_softmax(dim=-1)

    def greedy_search(self, src: Tensor, max_new_tokens: int, use_cache: bool = True) -> Tensor:
        """The most likely token at every step, until each row has produced eos: (B, S) -> (B, T)."""
        src_mask = src != self.pad_id
        memory = self.net.encode(src, src_mask)
        cache = self.net.make_cache(src.size(0)) if use_cache else None
        tokens = torch.full((src.size(0), 1), self.bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
        for _ in range(max_new_tokens):
            next_id = self._next_log_probs(tokens, memory, src_mask, cache).argmax(dim=-1)  # (B,)
            next_id = next_id.masked_fill(done, self.pad_id)
            done |= next_id == self.eos_id
            tokens = torch.cat([tokens, next_id[:, None]], dim=1)
            if done.all():
                break
        out = tokens[:, 1:]
        return out.masked_fill(out == self.eos_id, self.pad_id)

    def beam_search(
        self,
        src: Tensor,
        max_new_tokens: int,
        beam_size: int,
        length_penalty: float = 1.0,
        use_cache: bool = True,
    ) -> Tensor:
        """`beam_size` hypotheses per source, extended by the best of their `beam_size * V` continuations each
        step: (B, S) -> (B, T). A hypothesis ending in eos among a step's best `beam_size` is finished; a source
        is done once it has `beam_size` finished ones that no live one can beat at the current length."""
        B, K = src.size(0), beam_size
        src_mask = src != self.pad_id
        memory = self.net.encode(src, src_mask).repeat_interleave(K, dim=0)  # (B*K, S, C)
        src_mask = src_mask.repeat_interleave(K, dim=0)
        cache = self.net.make_cache(B * K) if use_cache else None
        tokens = torch.full((B * K, 1), self.bos_id, dtype=torch.long, device=src.device)
        scores = torch.full((B, K), float("-inf"), device=src.device)
        scores[:, 0] = 0.0  # one live hypothesis to start with: the others would repeat it
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
        done = [False] * B

        for step in range(max_new_tokens):
            length = step + 1  # tokens of a hypothesis ending now, its eos included
            log_probs = self._next_log_probs(tokens, memory, src_mask, cache)  # (B*K, V)
            V = log_probs.size(-1)
            candidates = (scores.view(B * K, 1) + log_probs).view(B, K * V)
            top_scores, top_index = candidates.topk(2 * K, dim=1)  # (B, 2K): K of them are not eos
            top_scores, top_index = top_scores.tolist(), top_index.tolist()
            next_scores = torch.full((B, K), float("-inf"), device=src.device)
            next_beam = torch.zeros((B, K), dtype=torch.long)
            next_token = torch.full((B, K), self.pad_id, dtype=torch.long)
            for b in range(B):
                if done[b]:
                    continue
                live = 0
                for rank, (score, index) in enumerate(zip(top_scores[b], top_index[b], strict=True)):
                    beam, token = divmod(index, V)
                    if token == self.eos_id:
                        if rank < K:  # as good as the step's K best: a finished hypothesis
                            hypothesis = tokens[b * K + beam, 1:].tolist()
                            finished[b].append((score / length**length_penalty, hypothesis))
                        continue
                    next_scores[b, live], next_beam[b, live], next_token[b, live] = score, beam, token
                    live += 1
                    if live == K:
                        break
                if len(finished[b]) >= K:
                    kth_best = sorted((s for s, _ in finished[b]), reverse=True)[K - 1]
                    done[b] = kth_best >= float(next_scores[b].max()) / length**length_penalty
            if all(done):
                break
            rows = (
                (torch.arange(B)[:, None] * K + next_beam).view(-1).to(src.device)
            )  # (B*K,) surviving beams
            tokens = torch.cat([tokens[rows], next_token.view(-1, 1).to(src.device)], dim=1)
            scores = next_scores
            if cache is not None:
                for layer in cache:
                    layer.reorder(rows)

        outputs = []
        for b in range(B):
            if not finished[b]:  # ran out of steps: the live hypotheses, ranked the same way
                length = tokens.size(1) - 1
                for k in range(K):
                    if scores[b, k] > float("-inf"):
                        finished[b].append(
                            (float(scores[b, k]) / length**length_penalty, tokens[b * K + k, 1:].tolist())
                        )
            outputs.append(max(finished[b], key=lambda item: item[0])[1])
        width = max(1, max(len(o) for o in outputs))
        out = torch.full((B, width), self.pad_id, dtype=torch.long, device=src.device)
        for b, ids in enumerate(outputs):
            out[b, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        return out

    # ---- text, for a module that was given its run's tokenizer (`genlab.load` does) -------------------------

    def encode(self, text: str) -> Tensor:
        """Token ids (S,) of `text` with `self.tokenizer`."""
        return torch.as_tensor(self._tokenizer().encode(text), dtype=torch.long)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The text of target ids (read in order; special ids are left out)."""
        specials = {self.pad_id, self.bos_id, self.eos_id}
        return self._tokenizer().decode(
            [i for i in torch.as_tensor(ids).flatten().tolist() if i not in specials]
        )

    def translate_text(
        self,
        text: str | Sequence[str],
        beam_size: int = 4,
        length_penalty: float = 1.0,
        max_new_tokens: int | None = None,
    ) -> str | list[str]:
        """The translation of `text` (a string, or a list of them translated as one batch)."""
        texts = [text] if isinstance(text, str) else list(text)
        ids = [self.encode(t) for t in texts]
        longest = self.net.block_size
        for t, i in zip(texts, ids, strict=True):
            if len(i) == 0 or len(i) > longest:
                from genlab.errors import ConfigError

                raise ConfigError(
                    f"source {t[:40]!r}... has {len(i)} tokens; the model reads 1 to {longest}: split it into "
                    "shorter pieces (a line or a sentence each)"
                )
        src = torch.full((len(ids), max(len(i) for i in ids)), self.pad_id, dtype=torch.long)
        for row, i in enumerate(ids):
            src[row, : len(i)] = i
        out = self.translate(src, max_new_tokens, beam_size=beam_size, length_penalty=length_penalty)
        results = [self.decode(row) for row in out]
        return results[0] if isinstance(text, str) else results

    def _tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(
                "this module has no tokenizer: load it with genlab.load(run_dir), or set .tokenizer "
                "(genlab.data.tokenizers.load_tokenizer(run_dir))"
            )
        return self.tokenizer
