"""The seq2seq family: the encoder-decoder net, teacher forcing, greedy and beam-search decoding with a key/value
cache, BLEU/chrF with the copy baseline, and the commands (train, eval, sample, genlab.load) end to end."""

from __future__ import annotations

import csv
import itertools
import json
import math

import pytest
import torch

from genlab.errors import ConfigError
from genlab.metrics.translation import corpus_scores, evaluate_translations
from genlab.models.seq2seq import Seq2Seq
from genlab.nets.seq2seq import Seq2SeqTransformer
from tests.conftest import run_genlab
from tests.parallel_corpus import write_editions


def tiny_model(vocab_size: int = 12, seed: int = 0, block_size: int = 24, eos_boost: float = 0.0) -> Seq2Seq:
    torch.manual_seed(seed)
    net = Seq2SeqTransformer(
        vocab_size, block_size, n_encoder_layer=2, n_decoder_layer=2, n_head=2, n_embd=16
    )
    with torch.no_grad():  # a larger eos embedding makes eos likelier: hypotheses then end at different steps
        net.wte.weight[-1] *= 1.0 + eos_boost
    return Seq2Seq(net).eval()


def sources(model: Seq2Seq, lengths: list[int], seed: int = 0) -> torch.Tensor:
    """A batch of random sources of these lengths, padded with the model's pad id."""
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), model.pad_id)
    for row, n in enumerate(lengths):
        src[row, :n] = torch.randint(0, model.pad_id, (n,), generator=g)
    return src


def test_special_ids_count_from_the_end_of_the_vocabulary():
    model = tiny_model(vocab_size=12)
    assert (model.pad_id, model.bos_id, model.eos_id) == (9, 10, 11)
    assert model.modality == "seq2seq" and model.net_names == ("net",)
    assert model.metric_modes["test/bleu"] == "max" and model.metric_modes["test/copy_chrf"] == "max"
    with pytest.raises(ConfigError, match="label_smoothing=1.5"):
        Seq2Seq(model.net, label_smoothing=1.5)


def test_padding_changes_nothing_for_the_real_tokens():
    model = tiny_model()
    src = sources(model, [7, 3])
    memory = model.net.encode(src, src != model.pad_id)
    alone = model.net.encode(src[1:, :3], torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(memory[1, :3], alone[0], rtol=1e-5, atol=1e-5)
    batch = model.translate(src, 10)
    assert torch.equal(model.translate(src[1, :3], 10), batch[1, : model.translate(src[1, :3], 10).numel()])


def test_teacher_forcing_loss_is_token_cross_entropy_without_padding():
    model = tiny_model()
    src = sources(model, [5, 4])
    tgt = torch.tensor(
        [[model.bos_id, 1, 2, 3, model.eos_id], [model.bos_id, 4, model.eos_id, model.pad_id, model.pad_id]]
    )
    model.label_smoothing = 0.0
    loss = model.training_step({"src": src, "tgt": tgt}, 0)
    logits = model(src, tgt[:, :-1])
    # the mean NLL over the six real target tokens (eos included), computed token by token
    real = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    expected = -sum(logits[b, t].log_softmax(-1)[tgt[b, t + 1]] for b, t in real) / len(real)
    torch.testing.assert_close(loss, expected)
    # label smoothing 0.1: 0.9 of that, plus 0.1 of the cross-entropy to the uniform distribution
    model.label_smoothing = 0.1
    smoothed = model.training_step({"src": src, "tgt": tgt}, 0)
    uniform = -sum(logits[b, t].log_softmax(-1).mean() for b, t in real) / len(real)
    torch.testing.assert_close(smoothed, 0.9 * expected + 0.1 * uniform)


def test_kv_cached_decoding_equals_uncached():
    for seed in range(3):
        model = tiny_model(seed=seed, eos_boost=2.0)
        src = sources(model, [6, 2, 9], seed=seed)
        assert torch.equal(
            model.translate(src, 15, use_cache=True), model.translate(src, 15, use_cache=False)
        )
        assert torch.equal(
            model.translate(src, 15, beam_size=3, use_cache=True),
            model.translate(src, 15, beam_size=3, use_cache=False),
        )
    # and the logits themselves, step by step
    model = tiny_model()
    src = sources(model, [6, 4])
    mask = src != model.pad_id
    memory = model.net.encode(src, mask)
    tgt = torch.tensor([[model.bos_id, 3, 1, 4, 1, 5], [model.bos_id, 2, 6, 5, 3, 5]])
    full = model.net.decode(tgt, memory, mask)
    cache = model.net.make_cache(2)
    steps = torch.cat(
        [model.net.decode(tgt[:, t : t + 1], memory, mask, cache) for t in range(tgt.size(1))], 1
    )
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


def test_beam_search_with_one_beam_equals_greedy():
    for seed, boost in itertools.product(range(4), (0.0, 2.0)):
        model = tiny_model(seed=seed, eos_boost=boost)
        src = sources(model, [5, 8, 3, 1], seed=seed)
        greedy = model.greedy_search(src, 12)
        for penalty in (0.0, 1.0, 2.0):
            beam = model.beam_search(src, 12, beam_size=1, length_penalty=penalty)
            assert torch.equal(beam, greedy[:, : beam.size(1)]), (seed, boost, penalty)
            assert (greedy[:, beam.size(1) :] == model.pad_id).all()


def sequence_log_prob(model: Seq2Seq, src: torch.Tensor, ids: list[int]) -> float:
    """log p(ids, eos | src), scored by teacher forcing with the decoder's own masking of pad and bos."""
    tgt = torch.tensor([[model.bos_id, *ids]])
    logits = model(src[None], tgt)[0].float()
    logits[:, [model.pad_id, model.bos_id]] = float("-inf")
    log_probs = logits.log_softmax(-1)
    return float(sum(log_probs[t, token] for t, token in enumerate([*ids, model.eos_id])))


def test_a_beam_wide_enough_finds_the_best_hypothesis_by_exhaustive_search():
    # 2 text tokens + pad, bos, eos: with 8 beams no hypothesis of up to 3 tokens is ever pruned
    for seed, penalty in itertools.product(range(3), (0.0, 1.0)):
        model = tiny_model(vocab_size=5, seed=seed, eos_boost=1.0)
        src = sources(model, [4], seed=seed)[0]
        texts = [
            list(t) for n in range(3) for t in itertools.product([0, 1], repeat=n)
        ]  # ends with eos by step 3
        best = max(texts, key=lambda t: sequence_log_prob(model, src, t) / (len(t) + 1) ** penalty)
        found = model.translate(src, 3, beam_size=8, length_penalty=penalty)
        assert found[found != model.pad_id].tolist() == best, (seed, penalty)


def test_translate_returns_ids_without_special_tokens():
    model = tiny_model(eos_boost=1.5)
    out = model.translate(sources(model, [4])[0], 20, beam_size=4)
    assert out.dim() == 1 and 0 < out.numel() <= 20
    assert not {model.bos_id, model.eos_id} & set(out.tolist())
    with pytest.raises(ValueError, match="beam_size=0"):
        model.translate(out, 5, beam_size=0)
    assert model.translate(sources(model, [4])[0], 10**6).numel() <= model.net.block_size - 1  # capped


# ---- metrics ---------------------------------------------------------------------------------------------------


REFERENCES = [
    "Long live the king!",
    "Have you had quiet guard?",
    "Not a mouse stirring.",
    "Give you good night.",
]
FOLIO_LINES = [
    "Long liue the King",
    "Haue you had quiet Guard?",
    "Not a Mouse stirring",
    "Giue you good night",
]


def test_bleu_of_the_references_against_themselves_is_100():
    assert corpus_scores(REFERENCES, REFERENCES) == pytest.approx({"bleu": 100.0, "chrf": 100.0})
    with pytest.raises(ValueError, match="4 hypotheses for 3 references"):
        corpus_scores(REFERENCES, REFERENCES[:3])


def test_copy_baseline_matches_a_direct_sacrebleu_call():
    import sacrebleu

    class Tok:  # characters as ids
        def decode(self, ids):
            return "".join(chr(i + 32) for i in ids)

    model = tiny_model(vocab_size=100, block_size=40, eos_boost=3.0)
    src = torch.full((4, 30), model.pad_id)
    for row, line in enumerate(FOLIO_LINES):
        src[row, : len(line)] = torch.tensor([ord(c) - 32 for c in line])
    batch = {"src": src, "src_text": FOLIO_LINES, "tgt_text": REFERENCES}
    metrics, seconds, texts = evaluate_translations(model, [batch], Tok(), prefix="test", beam_size=2)
    assert metrics["test/copy_bleu"] == sacrebleu.corpus_bleu(FOLIO_LINES, [REFERENCES]).score
    assert metrics["test/copy_chrf"] == sacrebleu.corpus_chrf(FOLIO_LINES, [REFERENCES]).score
    assert 0 < metrics["test/copy_bleu"] < 100
    # the model's own scores are those of its decoded texts
    assert metrics["test/bleu"] == sacrebleu.corpus_bleu(texts["beam2"], [REFERENCES]).score
    assert metrics["test/greedy_chrf"] == sacrebleu.corpus_chrf(texts["greedy"], [REFERENCES]).score
    assert set(seconds) == {"beam2_decode", "greedy_decode"}
    only_greedy, _, _ = evaluate_translations(model, [batch], Tok(), prefix="val", beam_size=1)
    assert set(only_greedy) == {"val/bleu", "val/chrf", "val/copy_bleu", "val/copy_chrf"}


# ---- the commands, end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq2seq")
    texts = write_editions(folder / "texts", plays=("alpha", "beta", "gamma"), speeches=24)
    run_dir = folder / "run"
    result = run_genlab(
        "train",
        "experiment=folio_modern_seq2seq",
        "debug=fast",
        f"data.texts_dir={texts}",
        "data.val_plays=[beta]",
        "data.test_plays=[gamma]",
        "data.block_size=64",
        "data.batch_size=8",
        "model.net.n_embd=32",
        "model.net.n_encoder_layer=1",
        "model.net.n_decoder_layer=1",
        "trainer.max_steps=6",
        "trainer.max_epochs=2",
        "trainer.val_check_interval=null",
        "trainer.limit_test_batches=null",  # the whole test play, as genlab eval scores it
        "threads=1",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_training_ends_with_bleu_beside_the_copy_baseline(seq2seq_run):
    record = json.loads((seq2seq_run / "run.json").read_text())
    assert record["status"] == "completed"
    metrics = record["metrics"]
    for name in (
        "test/bleu",
        "test/chrf",
        "test/greedy_bleu",
        "test/copy_bleu",
        "test/copy_chrf",
        "test/ppl",
    ):
        assert name in metrics, name
    assert math.isclose(metrics["test/ppl"], math.exp(metrics["test/loss"]), rel_tol=1e-4)
    # the copy baseline on the synthetic test play: its Folio lines against the modern ones
    assert 0 < metrics["test/copy_bleu"] < 100
    samples = sorted((seq2seq_run / "samples").glob("translations_step*.txt"))
    assert samples and "source:" in samples[-1].read_text() and "reference:" in samples[-1].read_text()
    assert (seq2seq_run / "tokenizer.json").is_file()
    with open(seq2seq_run / "samples" / "test_translations.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert (
        rows[0] == ["source", "reference", "beam4", "greedy"] and len(rows) == 1 + 24
    )  # the test play's pairs
    import sacrebleu

    copy = sacrebleu.corpus_bleu([r[0] for r in rows[1:]], [[r[1] for r in rows[1:]]]).score
    assert metrics["test/copy_bleu"] == pytest.approx(copy, rel=1e-6)


def test_eval_scores_the_checkpoint_like_training_did(seq2seq_run, capsys):
    from genlab import evaluate

    evaluate.main([f"run={seq2seq_run}"])
    (report_path,) = (seq2seq_run / "checkpoints").glob("*.eval.json")
    report = json.loads(report_path.read_text())
    trained = json.loads((seq2seq_run / "run.json").read_text())["metrics"]
    for name in ("test/bleu", "test/greedy_bleu", "test/copy_bleu", "test/chrf", "test/loss"):
        assert report["metrics"][name] == pytest.approx(trained[name], rel=1e-5), name
    assert {"beam4_decode", "greedy_decode"} <= set(report["seconds"])
    assert "test/copy_bleu" in capsys.readouterr().out


def sample(*args: str) -> tuple[int, str, str]:
    """`genlab sample` in this process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from genlab.sample import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def test_sample_and_load_translate_text(seq2seq_run):
    import genlab

    model = genlab.load(seq2seq_run, device="cpu")
    expected = model.translate_text(["Giue me thy hand", "Good night"], beam_size=4)
    code, out, err = sample(f"run={seq2seq_run}", "src=Giue me thy hand\\nGood night")
    assert code == 0, err
    assert out.splitlines() == expected
    assert "2 line(s) translated (beam 4)" in err
    assert (
        (seq2seq_run / "samples" / "translations" / "translations.txt")
        .read_text()
        .startswith("Giue me thy hand\n=> ")
    )
    code, _, err = sample(f"run={seq2seq_run}", "src=x", "temperature=0.5")
    assert code == 1 and "temperature: not an option for Seq2Seq" in err
    # the recipe's byte-level BPE has no unknown characters: one no edition holds still round-trips and translates
    assert model.decode(model.encode("Zebra Ωmega")) == "Zebra Ωmega"
    code, out, err = sample(f"run={seq2seq_run}", "src=Zebra Ωmega")
    assert code == 0 and len(out.splitlines()) == 1, err
    assert model.translate_text("Good night", beam_size=1) == model.decode(
        model.translate(model.encode("Good night"), beam_size=1)
    )
