"""Tiny synthetic "editions" of plays in the layouts of the Gutenberg First Folio and modern files."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = [
    "have",
    "give",
    "love",
    "live",
    "ever",
    "never",
    "heaven",
    "unto",
    "upon",
    "self",
    "night",
    "good",
    "lord",
    "king",
    "sweet",
    "death",
    "eyes",
    "heart",
    "speak",
    "hear",
    "tell",
    "thee",
    "thou",
    "thy",
    "mine",
    "what",
    "where",
    "when",
    "will",
    "shall",
    "come",
    "go",
    "stay",
    "fair",
    "gentle",
    "noble",
]
SPEAKERS = [("Ham", "HAMLET"), ("Hor", "HORATIO"), ("Qu", "QUEEN")]


def folio_spelling(text: str) -> str:
    """Old spellings of a modern line: u/v swapped inside words, a final e added, and no final stop."""
    out = []
    for word in text.split():
        core = word.rstrip(".,;!?")
        old = core[:1] + core[1:].replace("v", "u") if len(core) > 1 else core
        old = "vn" + old[2:] if old.startswith("un") else old
        if old.endswith(("d", "k", "f")):
            old += "e"
        out.append(old + word[len(core) :])
    return " ".join(out).rstrip(".")


def folio_file(title: str, speeches: list[tuple[str, str]]) -> str:
    """The Gutenberg Folio layout: the speaker's line indented, its text running on over unindented lines."""
    lines = [title, "", "Actus Primus. Scoena Prima.", "", "Enter Hamlet and Horatio.", ""]
    for speaker, text in speeches:
        words = text.split()
        lines.append(f"  {speaker}. {' '.join(words[:5])}")
        if words[5:]:
            lines.append(" ".join(words[5:]))
        lines.append("")
    return "\n".join(lines) + "\nFINIS.\n"


def modern_file(title: str, speeches: list[tuple[str, str]]) -> str:
    """The modern layout: a paragraph per speech, the speaker alone on its first line."""
    lines = [title.upper(), "", "ACT I.", "", "Scene I. A room.", "", "[Enter Hamlet and Horatio.]", ""]
    for speaker, text in speeches:
        lines += [f"{speaker}.", text, ""]
    return "\n".join(lines)


def write_editions(
    folder: Path, plays: tuple[str, ...] = ("alpha", "beta", "gamma"), speeches: int = 16
) -> Path:
    """`<play>_gut.txt` and `<play>_gut_f.txt` for each play: the same random speeches in both editions."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, play in enumerate(plays):
        rng = random.Random(f"{play}-{n}")
        modern, folio = [], []
        for i in range(speeches):
            old_name, new_name = SPEAKERS[i % len(SPEAKERS)]
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + "."
            modern.append((new_name, text))
            folio.append((old_name, folio_spelling(text)))
        (folder / f"{play}_gut.txt").write_text(modern_file(play, modern), encoding="utf-8")
        (folder / f"{play}_gut_f.txt").write_text(folio_file(play, folio), encoding="utf-8")
    return folder
