"""`genlab serve`: a real LitServe server in a subprocess per tiny trained run (a VAE and a char GPT), called
over HTTP: results equal `genlab.load(...)` with the same seed, concurrent requests are batched, and every
kind of bad request gets a one-line 4xx JSON error while the server keeps serving.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import genlab
from genlab.errors import ConfigError
from tests.conftest import REPO, run_genlab

CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40
TINY = {
    "vae": "defaults: [mnist_vae, _self_]\nmodel:\n  net: {latent_dim: 8, channels: [8, 16], hidden_dim: 32}\n",
    "gpt": "defaults: [shakespeare_gpt, _self_]\ndata: {corpus: text_files, path: CORPUS, tokenizer: char, "
    "block_size: 16, batch_size: 4}\nmodel:\n  net: {n_layer: 1, n_embd: 32, n_head: 2}\n"
    "callbacks: {text_samples: null}\n",
}
STARTUP_S = 300  # two servers starting at once on a busy 2-core machine; seconds when it is idle


def train_tiny(root: Path, families: tuple[str, ...] = ("vae", "gpt")) -> dict[str, Path]:
    """One finished tiny run per family in `root/runs/<family>`, trained by one `genlab train -m` process."""
    (root / "corpus.txt").write_text(CORPUS)
    (root / "conf" / "experiment").mkdir(parents=True)
    for family in families:
        text = "# @package _global_\n" + TINY[family].replace("CORPUS", str(root / "corpus.txt"))
        (root / "conf" / "experiment" / f"tiny_{family}.yaml").write_text(
            text + f"experiment_name: {family}\n"
        )
    result = run_genlab(
        "train", "-m", "--config-dir", str(root / "conf"), "experiment=" + ",".join(f"tiny_{f}" for f in families),
        "debug=fast", "callbacks.sample_grid=null", "test=false",
        "trainer.limit_val_batches=1", "threads=1", f"hydra.sweep.dir={root / 'runs'}",
        "hydra.sweep.subdir=${experiment_name}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {family: root / "runs" / family for family in families}
    for run in runs.values():
        assert '"status": "completed"' in (run / "run.json").read_text(), (run / "train.log").read_text()
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, path: str, body: bytes | dict | None = None) -> tuple[int, bytes]:
    """(HTTP status, body) of a GET (no body) or POST to the server on `port`."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Server:
    def __init__(self, run: Path, log: Path, *options: str):
        self.port = free_port()
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "genlab.cli", "serve", f"run={run}", f"port={self.port}", "threads=1", *options],
            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if call(self.port, "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"server did not become healthy: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # serve turns it into LitServe's Ctrl-C shutdown
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return train_tiny(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def servers(runs, tmp_path_factory):
    """{"vae": port, "gpt": port}: a long batch_timeout for the VAE so that concurrent requests meet."""
    logs = tmp_path_factory.mktemp("serve-logs")
    started = {
        "vae": Server(runs["vae"], logs / "vae.log", "max_batch_size=16", "batch_timeout=0.5", "limits.max_n=8"),
        "gpt": Server(runs["gpt"], logs / "gpt.log", "max_batch_size=8", "batch_timeout=0.5",
                      "limits.max_new_tokens=50"),
    }  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_S
        for server in started.values():
            server.wait(deadline)
        yield {family: server.port for family, server in started.items()}
    finally:
        for server in started.values():
            server.stop()
    for server in started.values():  # a clean shutdown: every worker process is gone
        assert server.process.returncode is not None


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def png_pixels(text: str) -> torch.Tensor:
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(text))).convert("L")
    return torch.tensor(list(image.getdata()), dtype=torch.float32).view(image.size[1], image.size[0])


def test_images_equal_genlab_load_sample_with_the_same_seed(runs, servers):
    model = genlab.load(runs["vae"], device="cpu")
    expected = model.sample(3, generator=seeded(5))
    status, body = call(servers["vae"], "/predict", {"n": 3, "seed": 5, "format": "array"})
    assert status == 200, body
    got = json.loads(body)
    assert got["seed"] == 5 and got["batch"] >= 1
    assert torch.allclose(torch.tensor(got["images"]), expected, atol=1e-6)
    # PNGs: the same images, rounded to 8 bits as `genlab sample` writes them
    status, body = call(servers["vae"], "/predict", {"n": 3, "seed": 5})
    pngs = json.loads(body)["images"]
    assert status == 200 and len(pngs) == 3
    for png, image in zip(pngs, expected):
        assert (png_pixels(png) - (image[0] * 255 + 0.5).clamp(0, 255).floor()).abs().max() <= 1
    status, body = call(servers["vae"], "/predict", {"n": 4, "seed": 5, "format": "grid"})
    assert status == 200 and png_pixels(json.loads(body)["grid"]).shape == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2)
    # another seed: other images
    other = json.loads(call(servers["vae"], "/predict", {"n": 3, "seed": 6, "format": "array"})[1])["images"]
    assert not torch.allclose(torch.tensor(other), expected)


def test_text_equals_genlab_load_generate_with_the_same_seed_also_streamed(runs, servers):
    model = genlab.load(runs["gpt"], device="cpu")
    request = {"prompt": "To be", "max_new_tokens": 40, "temperature": 0.9, "top_k": 10, "seed": 3}
    expected = model.generate_text("To be", 40, 0.9, 10, None, generator=seeded(3))
    status, body = call(servers["gpt"], "/predict", request)
    assert status == 200, body
    assert json.loads(body)["text"] == expected and len(expected) == 40
    status, body = call(servers["gpt"], "/stream", request)
    assert status == 200 and body.decode() == expected
    other = json.loads(call(servers["gpt"], "/predict", {**request, "seed": 4})[1])["text"]
    assert other != expected


def test_sixteen_concurrent_requests_are_all_answered_and_batched(runs, servers):
    model = genlab.load(runs["vae"], device="cpu")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda seed: call(servers["vae"], "/predict", {"n": 2, "seed": seed, "format": "array"}), range(16)
        ))  # fmt: skip
    assert [status for status, _ in answers] == [200] * 16
    replies = [json.loads(body) for _, body in answers]
    for seed, reply in enumerate(replies):  # batched with others, each still its own seed's images
        assert torch.allclose(
            torch.tensor(reply["images"]), model.sample(2, generator=seeded(seed)), atol=1e-6
        )
    batches = [reply["batch"] for reply in replies]
    assert max(batches) > 1 and max(batches) <= 16, batches

    # greedy text requests of one prompt length share one generate call, and equal greedy decoding alone
    lm = genlab.load(runs["gpt"], device="cpu")
    prompts = ["To be", "Whose", "or no", "the q", "mind ", "that ", "is th", "ether"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda p: call(servers["gpt"], "/predict", {"prompt": p, "max_new_tokens": 12, "temperature": 0}),
            prompts,
        ))  # fmt: skip
    assert [status for status, _ in answers] == [200] * 8
    replies = [json.loads(body) for _, body in answers]
    assert [r["text"] for r in replies] == [lm.generate_text(p, 12, temperature=0) for p in prompts]
    assert max(r["batch"] for r in replies) > 1


BAD_IMAGE = [
    (b'{"n": "four"}', 400, 'n must be a whole number, not "four"'),
    (b'{"n": 2.5}', 400, "n must be a whole number, not 2.5"),
    (b'{"n": true}', 400, "n must be a whole number, not true"),
    (b'{"n": 9}', 400, "n=9 is above the limit of 8 (the server's limits.max_n)"),
    (b'{"n": 0}', 400, "n=0 must be at least 1"),
    (b'{"seed": -1}', 400, "seed=-1 must be at least 0"),
    (b'{"n": 1, "colour": "red"}', 400, "unknown field 'colour'"),
    (b'{"labels": 3}', 400, "labels: this model is unconditional"),
    (b'{"steps": 5}', 400, "steps: this model has no diffusion sampler"),
    (b'{"format": "jpeg"}', 400, 'format="jpeg": choose one of png, grid, array'),
    (b"{n: 1}", 400, "the request body is not JSON"),
    (b"[1, 2]", 400, "the request body must be a JSON object, not list"),
    (b'{"n": 1, "pad": "' + b"x" * 70_000 + b'"}', 413, "above limits.max_body_bytes=65536"),
]
BAD_TEXT = [
    (
        b'{"prompt": "To be \xc3\xa9t\xc3\xa9"}',
        400,
        "characters outside the char tokenizer's vocabulary: ['\u00e9']",
    ),
    (b'{"prompt": 42}', 400, "prompt must be a non-empty string, not 42"),
    (b'{"prompt": ""}', 400, "prompt must be a non-empty string"),
    (b'{"max_new_tokens": 51}', 400, "max_new_tokens=51 is above the limit of 50"),
    (b'{"max_new_tokens": "10"}', 400, 'max_new_tokens must be a whole number, not "10"'),
    (b'{"temperature": "hot"}', 400, 'temperature must be a number, not "hot"'),
    (b'{"temperature": -1}', 400, "temperature=-1 must be at least 0"),
    (b'{"top_k": 0}', 400, "top_k=0 must be at least 1"),
    (b'{"top_p": 1.5}', 400, "top_p=1.5 must be between 0 and 1"),
    (b'{"n": 4}', 400, "unknown field 'n': this text model takes prompt, max_new_tokens"),
]


@pytest.mark.parametrize("family", ["vae", "gpt"])
def test_bad_requests_get_one_line_4xx_json_and_the_server_serves_on(servers, family):
    paths = ["/predict"] if family == "vae" else ["/predict", "/stream"]
    for path in paths:
        for body, status, message in BAD_IMAGE if family == "vae" else BAD_TEXT:
            got_status, got = call(servers[family], path, body)
            assert got_status == status, (path, body[:60], got)
            error = json.loads(got)["error"]
            assert message in error and "\n" not in error, (body[:60], error)
    good = {"n": 1} if family == "vae" else {"prompt": "To", "max_new_tokens": 3}
    assert call(servers[family], "/predict", good)[0] == 200


def test_health_and_info_describe_the_served_run(runs, servers):
    assert call(servers["vae"], "/health") == (200, b"ok")
    for family, modality in (("vae", "image"), ("gpt", "text")):
        status, body = call(servers[family], "/info")
        info = json.loads(body)["model"]
        record = json.loads((runs[family] / "run.json").read_text())
        checkpoint = torch.load(runs[family] / record["best_checkpoint"], weights_only=True)
        assert status == 200 and info["experiment"] == family and info["modality"] == modality
        assert info["family"] == ("VAE" if family == "vae" else "CausalLM")
        assert info["checkpoint"] == record["best_checkpoint"]
        assert info["global_step"] == checkpoint["global_step"] > 0
        assert info["metrics"] == record["metrics"] and "val/loss" in info["metrics"]
        assert info["batching"]["max_batch_size"] == (16 if family == "vae" else 8)
    assert json.loads(call(servers["vae"], "/info")[1])["model"]["limits"]["max_n"] == 8


# ---- without a server ----------------------------------------------------------------------------------


def test_options_and_a_missing_litserve_are_one_line_errors(monkeypatch, capsys, tmp_path):
    import genlab.serve as serve

    cases = [
        (["run=x", "workers=0"], "workers=0 must be a whole number of at least 1"),
        (["run=x", "batch_timeout=-1"], "batch_timeout=-1 must be a number of at least 0"),
        (["run=x", "limits.max_n=0"], "limits.max_n=0 must be a whole number of at least 1"),
        (["run=x", "port=70000"], "port=70000 must be at most 65535"),
        ([], "give exactly one of run=RUN_DIR"),
        (["run=x", "device=tpu"], "device='tpu': choose one of auto, cpu, cuda"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            serve.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and err.count("\n") == 1 and message in err, err

    with socket.socket() as busy:  # a port that is taken
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SystemExit):
            serve.main([f"run={tmp_path}", f"port={busy.getsockname()[1]}"])
        assert "choose another port=" in capsys.readouterr().err

    monkeypatch.setattr(serve, "ls", None)
    options, overrides = serve.parse_args([f"run={tmp_path}"])
    with pytest.raises(ConfigError, match=r"pip install 'genlab\[serve\]'"):
        serve.build_server(options, overrides)


def test_check_request_fills_defaults_and_checks_labels_of_a_conditional_model():
    from genlab.serve_requests import IMAGE_FIELDS, RequestError, RequestSpec, check_request

    limits = {
        "max_n": 8,
        "max_steps": 50,
        "max_new_tokens": 10,
        "max_prompt_chars": 10,
        "max_body_bytes": 1000,
    }
    spec = RequestSpec("image", limits, conditional=True, num_classes=10, has_steps=True, guided=True)
    assert check_request(b"", spec) == IMAGE_FIELDS
    assert check_request(b'{"n": 2, "labels": [3, 9], "steps": 50, "guidance": 2}', spec)["labels"] == [3, 9]
    for body, message in [
        (b'{"labels": 10}', "labels: this model has classes 0 to 9"),
        (b'{"n": 2, "labels": [1, 2, 3]}', "3 labels for n=2 images"),
        (b'{"labels": "cat"}', "labels must be a class index or a list of them"),
        (b'{"steps": 51}', "steps=51 is above the limit of 50"),
        (b'{"guidance": -1}', "guidance=-1 must be at least 0"),
    ]:
        with pytest.raises(RequestError, match=message.replace("[", r"\[")):
            check_request(body, spec)
