"""Print the corpus tables of README.md: plays per split, pairs kept, share of text kept, and random pairs.

    python experiments/folio_modern/corpus_report.py [--pairs 20] [--seed 0] [--block-size 96]

Builds `data=folio_modern` as experiment=folio_modern_seq2seq does (block_size 96; the paired corpus is cached
in ~/.cache/genlab/folio_modern).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from genlab.data.parallel import ParallelTextDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="random training pairs to print")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="~/.cache/genlab")
    parser.add_argument("--block-size", type=int, default=96, help="data.block_size: longest segment + 2")
    args = parser.parse_args()

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        dm = ParallelTextDataModule(
            tokenizer_dir=run_dir, cache_dir=args.cache_dir, block_size=args.block_size
        )
        dm.setup()
    print(f"setup {time.perf_counter() - start:.1f} s, vocabulary {dm.vocab_size} (pad, bos, eos included)\n")

    print("| split | plays | Folio speeches | modern speeches | aligned | pairs | Folio text kept | modern text kept "
          "| segments dropped (too long) |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for split, r in dm.report.items():
        plays = ", ".join(r["plays"]) if len(r["plays"]) < 4 else f"{len(r['plays'])} plays"
        print(
            f"| {split} | {plays} | {r['folio_speeches']} | {r['modern_speeches']} | {r['aligned_speeches']} "
            f"| {r['pairs']} | {r['folio_text_kept']:.1%} | {r['modern_text_kept']:.1%} "
            f"| {r['segments_dropped_long']} |"
        )

    rng = random.Random(args.seed)
    print(f"\n{args.pairs} random training pairs (seed {args.seed}):\n")
    print("| play | similarity | First Folio (source) | modern (target) |")
    print("| --- | ---: | --- | --- |")
    for pair in rng.sample(dm.pairs["train"], args.pairs):
        src, tgt = (s.replace("|", "\\|") for s in (pair.src, pair.tgt))
        print(f"| {pair.play} | {pair.similarity:.2f} | {src} | {tgt} |")


if __name__ == "__main__":
    main()
