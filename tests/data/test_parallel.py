"""The First Folio / modern parallel corpus: reading both layouts, aligning speeches, cutting long ones, the split
by play, the joint vocabulary with its special tokens, and the resumable batch order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genlab.data import folio
from genlab.data.parallel import ParallelTextDataModule, load_pairs
from genlab.errors import ConfigError, DataError
from tests.parallel_corpus import write_editions

FOLIO = """The Tragedie of Nobody

Actus Primus. Scoena Prima.

Enter Barnardo and Francisco two Centinels.

  Barnardo. Who's there?
  Fran. Nay answer me: Stand & vnfold
your selfe

   Bar. Long liue the King

   M.Ford. Why (alas) what's the matter?
Exit Fran.

   Bar. Haue you had quiet Guard?
  Fran. Not a Mouse stirring

   Bar. Well, goodnight. If you do meet Horatio and
Marcellus, the Riuals of my Watch, bid them make hast.
Enter Horatio and
Marcellus.

  Fran. I thinke I heare them
"""

MODERN = """THE TRAGEDY OF NOBODY

ACT I.

Scene I. Elsinore. A platform before the Castle.

[Francisco at his post. Enter to him Bernardo.]

Ber.
Who's there?

Fran.
Nay, answer me: stand, and unfold yourself.

Ber.
Long live the king!

FRANCISCO. Bernardo? Is it you at last?

Ber.
Have you had quiet guard?

Fran.
Not a mouse stirring.

Ber.
Well, good night. [Aside.]
If you do meet Horatio and Marcellus,
The rivals of my watch, bid them make haste.

Fran.
I think I hear them.
"""


def test_both_layouts_are_read_into_speeches_with_their_speakers():
    old = folio.read_folio(FOLIO)
    assert [s.speaker for s in old] == ["Barnardo", "Fran", "Bar", "M.Ford", "Bar", "Fran", "Bar", "Fran"]
    assert old[1].text == "Nay answer me: Stand & vnfold your selfe"  # the run-on line joins the speech
    assert old[3].text == "Why (alas) what's the matter?"  # the stage direction after it is left out
    assert old[6].text.endswith("bid them make hast.")  # a two-line stage direction is left out too
    new = folio.read_modern(MODERN)
    assert [s.speaker for s in new] == ["Ber", "Fran", "Ber", "FRANCISCO", "Ber", "Fran", "Ber", "Fran"]
    assert new[3].text == "Bernardo? Is it you at last?"
    assert (
        new[6].text
        == "Well, good night. If you do meet Horatio and Marcellus, The rivals of my watch, bid them make haste."
    )


def test_speakers_without_their_stop_and_numbered_modern_speakers_are_recognised():
    """The Folio prints some speakers without a stop ("Ma I know not", "Gru . I pray"): a first word the play
    uses as a speaker elsewhere is one; another first word is text. Modern numbered speakers ("1 Clown." alone,
    "2 MESSENGER. By this...") open speeches of their own instead of running on into the one before."""
    old = folio.read_folio(
        "  Ma. Madam, the young Gentleman\n"
        "  Ma I know not (Madam)\n"
        "  Gru . I pray you Sir\n"
        "  Gru. Nay\n"
        "  1. When shall we three meet againe\n"
        "  1 Where hast thou beene, Sister?\n"
        "  Hayle\n"
        "  Thrice the brinded Cat hath mew'd\n"
    )
    assert [(s.speaker, s.text) for s in old] == [
        ("Ma", "Madam, the young Gentleman"),
        ("Ma", "I know not (Madam)"),
        ("Gru", "I pray you Sir"),
        ("Gru", "Nay"),
        ("1", "When shall we three meet againe"),
        ("1", "Where hast thou beene, Sister?"),
        ("", "Hayle"),
        ("", "Thrice the brinded Cat hath mew'd"),  # "Thrice" names no speaker of the play
    ]
    new = folio.read_modern(
        "1 Clown.\nWhat is he that builds stronger?\n\n"
        "2 MESSENGER. By this, the gallows-maker.\n\n"
        "CYMBELINE. Thou art\nwelcome.\n"
    )
    assert [(s.speaker, s.text) for s in new] == [
        ("1 Clown", "What is he that builds stronger?"),
        ("2 MESSENGER", "By this, the gallows-maker."),
        ("CYMBELINE", "Thou art welcome."),
    ]


def test_alignment_skips_an_omission_on_each_side():
    # the Folio's 4th speech (M.Ford) and the modern 4th (FRANCISCO) have no counterpart: both are skipped and
    # every other speech meets its own, not a neighbour
    pairs, report = folio.pair_play("nobody", FOLIO, MODERN, min_similarity=0.4, max_chars=500)
    got = [(p.src_speaker, p.tgt_speaker, p.tgt) for p in pairs]
    assert got == [
        ("Barnardo", "Ber", "Who's there?"),
        ("Fran", "Fran", "Nay, answer me: stand, and unfold yourself."),
        ("Bar", "Ber", "Long live the king!"),
        ("Bar", "Ber", "Have you had quiet guard?"),
        ("Fran", "Fran", "Not a mouse stirring."),
        (
            "Bar",
            "Ber",
            "Well, good night. If you do meet Horatio and Marcellus, The rivals of my watch, bid them make haste.",
        ),
        ("Fran", "Fran", "I think I hear them."),
    ]
    assert pairs[1].src == "Nay answer me: Stand & vnfold your selfe"
    assert (report.folio_speeches, report.modern_speeches, report.aligned, report.pairs) == (8, 8, 7, 7)
    assert report.kept_modern_chars == sum(len(p.tgt) for p in pairs) < report.modern_chars


def test_align_is_the_best_monotone_matching_above_the_threshold():
    sim = np.array(
        [
            [0.9, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.8, 0.0],  # row 1 fits column 2 ...
            [0.0, 0.7, 0.0, 0.0],  # ... so row 2 cannot take column 1 (crossing): one of them is dropped
            [0.0, 0.0, 0.0, 0.3],  # below the threshold: never matched
        ]
    )
    assert folio.align(sim, 0.5) == [(0, 0), (1, 2)]  # 0.9 + 0.8 beats 0.9 + 0.7
    assert folio.align(sim, 0.2) == [(0, 0), (1, 2), (3, 3)]
    assert folio.align(np.zeros((0, 3)), 0.5) == []


def test_word_keys_meet_across_spellings():
    for old, new in [
        ("vnfold", "unfold"),
        ("Haue", "have"),
        ("selfe", "self"),
        ("liue", "live"),
        ("hast", "haste"),
    ]:
        assert folio.word_key(old) == folio.word_key(new), (old, new)
    assert folio.word_key("king") != folio.word_key("queen")


def test_long_pairs_are_cut_after_shared_punctuation_into_pieces_that_fit():
    src = "Long liue the King, and all his noble Lords: we drinke to him and his, and to our selues, for euer"
    tgt = "Long live the king, and all his noble lords; we drink to him and his, and to ourselves, for ever."
    pieces, dropped = folio.segments(src, tgt, max_chars=45)
    assert dropped == 0 and len(pieces) > 1
    assert all(len(s) <= 45 and len(t) <= 45 for s, t in pieces)
    assert " ".join(s for s, _ in pieces) == src and " ".join(t for _, t in pieces) == tgt  # nothing lost
    assert pieces[0] == (
        "Long liue the King, and all his noble Lords:",
        "Long live the king, and all his noble lords;",
    )
    # no cut can make a piece short enough: dropped and counted
    pieces, dropped = folio.segments(
        "one two three four five six", "one two three four five six.", max_chars=10
    )
    assert pieces == [] and dropped == 1
    assert folio.segments("short", "short.", max_chars=10) == ([("short", "short.")], 0)


def test_folio_file_names_differ_for_some_plays(tmp_path):
    (tmp_path / "twelfth_night_gut.txt").write_text(MODERN)
    (tmp_path / "twelfe-night_gut_f.txt").write_text(FOLIO)
    (tmp_path / "sonnets_gut.txt").write_text(
        MODERN
    )  # a modern text without a Folio edition is not a play here
    assert folio.edition_files(tmp_path) == {
        "twelfth_night": (tmp_path / "twelfe-night_gut_f.txt", tmp_path / "twelfth_night_gut.txt")
    }
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no play in .* has both editions"):
        folio.edition_files(tmp_path / "empty")


# ---- the datamodule -------------------------------------------------------------------------------------------


def datamodule(texts, tmp_path, **kwargs) -> ParallelTextDataModule:
    args = dict(
        texts_dir=str(texts),
        val_plays=["beta"],
        test_plays=["gamma", "delta"],
        block_size=64,
        batch_size=4,
        tokenizer_dir=str(tmp_path / "run"),
        seed=0,
    )
    return ParallelTextDataModule(**(args | kwargs))


@pytest.fixture
def texts(tmp_path):
    return write_editions(tmp_path / "texts", plays=("alpha", "beta", "gamma", "delta", "epsilon"))


def test_the_split_never_puts_one_play_in_two_splits(texts, tmp_path):
    dm = datamodule(texts, tmp_path)
    dm.setup()
    plays = {split: {p.play for p in dm.pairs[split]} for split in ("train", "val", "test")}
    assert plays == {"train": {"alpha", "epsilon"}, "val": {"beta"}, "test": {"gamma", "delta"}}
    assert dm.report["train"]["plays"] == ["alpha", "epsilon"] and dm.report["test"]["pairs"] == 32
    # every source text of a held-out play comes from that play's file only
    train_sources = {p.src for p in dm.pairs["train"]}
    assert not train_sources & {p.src for p in dm.pairs["test"]}
    # the same split whatever the seed: it is by play, not drawn
    again = datamodule(texts, tmp_path, seed=7, tokenizer_dir=str(tmp_path / "other"))
    again.setup()
    assert [p.src for p in again.pairs["test"]] == [p.src for p in dm.pairs["test"]]


def test_play_choices_are_checked(texts, tmp_path):
    with pytest.raises(ConfigError, match="share \\['beta'\\]"):
        datamodule(texts, tmp_path, test_plays=["beta"])
    with pytest.raises(DataError, match="no play 'gama'.*did you mean gamma"):
        datamodule(texts, tmp_path, test_plays=["gama"]).setup()
    with pytest.raises(ConfigError, match="leave at least one for training"):
        datamodule(texts, tmp_path, plays=["beta", "gamma", "delta"]).setup()
    with pytest.raises(ConfigError, match="non-empty list"):
        datamodule(texts, tmp_path, val_plays="beta")
    only = datamodule(texts, tmp_path, plays=["alpha", "beta", "gamma", "delta"])
    only.setup()
    assert {p.play for p in only.pairs["train"]} == {"alpha"}


def test_joint_vocabulary_ends_with_pad_bos_eos_and_is_saved_for_the_run(texts, tmp_path):
    dm = datamodule(texts, tmp_path)
    dm.setup()
    assert (dm.pad_id, dm.bos_id, dm.eos_id) == (dm.vocab_size - 3, dm.vocab_size - 2, dm.vocab_size - 1)
    assert dm.runtime_info() == {"vocab_size": dm.vocab_size}
    text_chars = set("".join(p.src + p.tgt for split in dm.pairs.values() for p in split))
    assert dm.vocab_size == len(text_chars) + 3
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["type"] == "char" and len(saved["chars"]) == dm.vocab_size
    # a resumed run reads the saved one: the same ids even if its corpus had other characters
    again = datamodule(texts, tmp_path, plays=["alpha", "beta", "gamma", "delta"])
    again.setup()
    assert again.tokenizer.chars == dm.tokenizer.chars


def test_bpe_vocabulary_also_ends_with_the_special_tokens(texts, tmp_path):
    dm = datamodule(texts, tmp_path, tokenizer="bpe", bpe_vocab_size=300)
    dm.setup()
    assert dm.tokenizer.kind == "bpe" and dm.vocab_size == dm.tokenizer.tokenizer.get_vocab_size()
    assert [dm.tokenizer.encode(s) for s in ("<pad>", "<s>", "</s>")] == [
        [dm.pad_id],
        [dm.bos_id],
        [dm.eos_id],
    ]
    pair = dm.pairs["val"][0]
    assert dm.tokenizer.decode(dm.tokenizer.encode(pair.tgt)) == pair.tgt


def test_batches_are_padded_ids_with_bos_and_eos_around_the_target(texts, tmp_path):
    dm = datamodule(texts, tmp_path)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    for row, i in enumerate(batch["index"].tolist()):
        pair = dm.pairs["val"][i]
        src = [t for t in batch["src"][row].tolist() if t != dm.pad_id]
        tgt = [t for t in batch["tgt"][row].tolist() if t != dm.pad_id]
        assert dm.tokenizer.decode(src) == pair.src == batch["src_text"][row]
        assert tgt[0] == dm.bos_id and tgt[-1] == dm.eos_id
        assert dm.tokenizer.decode(tgt[1:-1]) == pair.tgt == batch["tgt_text"][row]
    # every val pair once, in the whole loader
    seen = sorted(i for b in dm.val_dataloader() for i in b["index"].tolist())
    assert seen == list(range(len(dm.pairs["val"])))
    capped = datamodule(texts, tmp_path, max_samples=5)
    capped.setup()
    assert sum(len(b["index"]) for b in capped.test_dataloader()) == 5


def test_training_batches_resume_where_the_checkpoint_left_them(texts, tmp_path):
    dm = datamodule(texts, tmp_path)
    dm.setup()
    loader = dm.train_dataloader()
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    state = dm.state_dict()
    rest = list(it)

    resumed = datamodule(texts, tmp_path)
    resumed.load_state_dict(state)  # before setup, as Lightning restores it
    resumed.setup()
    again = list(resumed.train_dataloader())
    assert len(again) == len(rest) and all(torch.equal(a["src"], b["src"]) for a, b in zip(again, rest))
    assert len(first) + len(rest) == len(dm.train_batches)
    # batches group pairs of similar length: a batch's rows differ in length less than the split does
    spreads = [(b["tgt"] != dm.pad_id).sum(1) for b in dm.train_batches]
    assert max(int(s.max() - s.min()) for s in spreads) < int(
        torch.cat(spreads).max() - torch.cat(spreads).min()
    )


def test_pairs_are_cached_by_content(texts, tmp_path, monkeypatch):
    plays = ["alpha", "beta"]
    pairs, reports = load_pairs(texts, plays, 0.4, 100, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "folio_modern").glob("*.json"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("paired again despite the cache")

    monkeypatch.setattr(folio, "pair_play", fail)
    cached, cached_reports = load_pairs(texts, plays, 0.4, 100, cache_dir=tmp_path / "cache")
    assert cached == pairs and cached_reports == reports
    with pytest.raises(AssertionError, match="paired again"):  # other settings: another cache entry
        load_pairs(texts, plays, 0.5, 100, cache_dir=tmp_path / "cache")
