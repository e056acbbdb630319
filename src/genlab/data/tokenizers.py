"""Character and byte-level BPE tokenizers, saved as `tokenizer.json` so sampling and evaluation reuse them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from genlab.errors import ConfigError, DataError

TOKENIZER_FILE = "tokenizer.json"
KINDS = ("char", "bpe")


@runtime_checkable
class Tokenizer(Protocol):
    """What datamodules, language models and `genlab sample` need from a tokenizer."""

    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save(self, directory: str | Path) -> Path: ...


class CharTokenizer:
    """One token per Unicode character; ids follow the sorted character set (as nanoGPT's shakespeare_char)."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        self.chars = sorted(set(chars))
        if not self.chars:
            raise DataError("cannot build a char tokenizer from empty text: check the corpus files")
        # code points in sorted order let numpy map a whole corpus to ids in one searchsorted call
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self.vocab_size = len(self.chars)

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(list(set(text)))

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of `text` as an int64 array (fast path for whole corpora)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes).clip(max=self.vocab_size - 1)
        unknown = self._codes[ids] != codes
        if unknown.any():
            missing = sorted({chr(c) for c in codes[unknown].tolist()})
            raise DataError(
                f"text has characters outside the char tokenizer's vocabulary: {missing!r}; "
                "use characters from the training corpus (or tokenizer=bpe, which covers every byte)"
            )
        return ids.astype(np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, directory: str | Path) -> Path:
        return _write_json(Path(directory), {"type": "char", "chars": self.chars})


class BPETokenizer:
    """Byte-level BPE (HF `tokenizers`): every byte is in the vocabulary, so any text encodes and round-trips."""

    kind = "bpe"

    def __init__(self, tokenizer):  # a tokenizers.Tokenizer
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
        if vocab_size < len(byte_level.alphabet()):
            raise ConfigError(
                f"data.bpe_vocab_size={vocab_size} is smaller than the 256 byte symbols BPE starts from: "
                "use at least 256"
            )
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = byte_level
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=byte_level.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        # chunks of whole lines, newlines kept, so merges across line ends (".\n") are learned too
        chunks = _line_chunks(text)
        tokenizer.train_from_iterator(chunks, trainer=trainer, length=len(chunks))
        return cls(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of a whole corpus: encoded in chunks of lines, in parallel (one 5 MB string takes seconds)."""
        encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)  # no offsets
        ids = [enc.ids for enc in encode_batch(_line_chunks(text))]
        return np.fromiter((i for chunk in ids for i in chunk), dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        return _write_json(directory, json.loads(self.tokenizer.to_str()))


def train_tokenizer(kind: str, text: str, bpe_vocab_size: int | None = None) -> CharTokenizer | BPETokenizer:
    """A new tokenizer of `kind` ("char" or "bpe") fitted to `text`."""
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        if not bpe_vocab_size:
            raise ConfigError("tokenizer=bpe needs data.bpe_vocab_size (e.g. 1024)")
        return BPETokenizer.train(text, bpe_vocab_size)
    raise ConfigError(f"unknown data.tokenizer={kind!r}: choose one of {', '.join(KINDS)}")


def load_tokenizer(directory: str | Path) -> CharTokenizer | BPETokenizer:
    """The tokenizer a run saved in `directory` (its run directory)."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"no tokenizer at {path}: point to the run directory of a language-model run")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(
            f"{path} is not a readable tokenizer file ({err}): delete it to train a new one"
        ) from err
    if data.get("type") == "char":
        return CharTokenizer(data["chars"])
    from tokenizers import Tokenizer

    return BPETokenizer(Tokenizer.from_str(json.dumps(data)))


def _line_chunks(text: str, lines_per_chunk: int = 1000) -> list[str]:
    """`text` cut at line ends into pieces that join back to `text` exactly."""
    lines = text.splitlines(keepends=True)
    return ["".join(lines[i : i + lines_per_chunk]) for i in range(0, len(lines), lines_per_chunk)]


def _write_json(directory: Path, data: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TOKENIZER_FILE
    # write then rename: every DDP rank may save the same tokenizer, and readers never see half a file
    tmp = directory / f".{TOKENIZER_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path
