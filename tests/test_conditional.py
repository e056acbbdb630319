"""Class-conditional generation: labels reach the samples, label dropout, classifier-free guidance, the class
metrics (conditional accuracy, mode coverage) and the refusal of labels by unconditional models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from genlab.data.images import ImageDataModule
from genlab.diffusion.samplers import ClassifierFreeGuidance
from genlab.errors import ConfigError
from genlab.generation.images import labels_for
from genlab.metrics.conditional import ClassMetrics, balanced_labels, conditional_accuracy, mode_coverage
from genlab.models.classifier import Classifier
from genlab.models.diffusion import Diffusion
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.nets.classifier import ConvClassifier
from genlab.nets.conv_vae import ConvVAE
from genlab.nets.dcgan import Discriminator, Generator
from genlab.nets.unet import UNet

SHAPE = (1, 8, 8)
CLASSES = 10


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomise(module: torch.nn.Module, std: float, seed: int = 0) -> None:
    """Non-zero weights everywhere: the UNet's zero-initialised output layers would hide the labels' effect."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


def unet(num_classes: int | None = CLASSES) -> UNet:
    return UNet(SHAPE, base_channels=8, channel_mults=(1, 2), attention_levels=(), num_classes=num_classes)


def diffusion(
    num_classes: int | None = CLASSES, sampler: str = "ddim", eta: float = 0.5, **kwargs
) -> Diffusion:
    torch.manual_seed(0)
    model = Diffusion(
        unet(num_classes), num_train_timesteps=40, sampler=sampler, num_inference_steps=6, eta=eta,
        ema_decay=None, num_classes=num_classes, **kwargs,
    )  # fmt: skip
    randomise(model.net, 0.05)  # small enough that the images are not clipped flat
    if num_classes is not None:  # nn.Embedding's own N(0, 1) start: labels that matter
        torch.nn.init.normal_(model.net.class_emb.weight)
    return model.eval()


def gan(num_classes: int | None = CLASSES) -> GAN:
    torch.manual_seed(0)
    g, d = Generator(SHAPE, 8, 8, num_classes=num_classes), Discriminator(SHAPE, 8, num_classes=num_classes)
    model = GAN(g, d, latent_dim=8, loss="hinge", ema_decay=None, num_classes=num_classes)
    randomise(model.generator, 0.2)  # DCGAN's N(0, 0.02) start draws nearly blank images whatever the label
    return model.eval()


def vae(num_classes: int | None = CLASSES) -> VAE:
    torch.manual_seed(0)
    return VAE(ConvVAE(SHAPE, 4, (8,), 16, num_classes=num_classes), num_classes=num_classes).eval()


# ---------------------------------------------------------------------------------------------- the families


def deterministic_diffusion(num_classes: int | None = CLASSES) -> Diffusion:
    return diffusion(num_classes, eta=0.0)  # the generator draws only the latents (and missing labels)


@pytest.mark.parametrize("make", [deterministic_diffusion, gan, vae], ids=["diffusion", "gan", "vae"])
def test_the_label_changes_the_samples_and_nothing_else_does(make):
    model = make()
    zeros = model.sample(4, seeded(0), labels=0)
    assert torch.equal(model.sample(4, seeded(0), labels=torch.zeros(4, dtype=torch.long)), zeros)
    ones = model.sample(4, seeded(0), labels=1)
    if isinstance(model, Diffusion):  # an untrained UNet's samples clip flat to 0/1: compare its predictions
        x, t = torch.randn(4, *SHAPE, generator=seeded(1)), torch.full((4,), 20)
        zeros, ones = (model.net(x, t, torch.full((4,), c)) for c in (0, 1))
    assert (zeros != ones).flatten(1).any(dim=1).all()  # every image moves with its label
    # without labels the classes are drawn from the generator, after the latents: a function of the seed
    drawn = torch.randint(CLASSES, (4,), generator=_after_latents(model, 4, 0))
    assert torch.equal(model.sample(4, seeded(0)), model.sample(4, seeded(0), labels=drawn))


def _after_latents(model, n: int, seed: int) -> torch.Generator:
    generator = seeded(seed)
    model.draw_latents(n, generator)
    return generator


@pytest.mark.parametrize("make", [diffusion, gan, vae], ids=["diffusion", "gan", "vae"])
def test_unconditional_models_refuse_labels_in_one_line_and_keep_their_weights(make):
    model = make(None)
    for kwargs, word in (({"labels": 3}, "labels=3"), ({"guidance": 2.0}, "guidance=2.0")):
        with pytest.raises(ConfigError) as error:
            model.sample(2, **kwargs)
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"{word}: {type(model).__name__} is unconditional")
    # no weights of the conditional machinery: checkpoints of unconditional models load as before
    conditional = ("class_emb", "label_emb", "embed")
    assert not [key for key in model.state_dict() if set(key.split(".")) & set(conditional)]


def test_unconditional_sample_options_refuse_labels():
    with pytest.raises(ConfigError, match=r"^labels=all: VAE is unconditional \(model.num_classes is null\)"):
        labels_for(vae(None), "all", 20)
    labels, nrow = labels_for(vae(), "all", 25)  # one row per class, ceil(25 / 10) images each
    assert nrow == 3 and labels.tolist() == [c for c in range(CLASSES) for _ in range(3)]
    with pytest.raises(ConfigError, match="has classes 0 to 9"):
        labels_for(vae(), [3, 10], 4)
    with pytest.raises(ConfigError, match="only diffusion models take a guidance scale, GAN does not"):
        gan().sample(2, labels=1, guidance=2.0)


def test_mismatched_num_classes_between_module_and_net_is_one_line():
    with pytest.raises(
        ConfigError, match=r"model.num_classes=10 but the net has num_classes=None: set model.net"
    ):
        Diffusion(unet(None), num_classes=10)
    with pytest.raises(ConfigError, match=r"the discriminator has num_classes=None"):
        GAN(Generator(SHAPE, 8, 8, num_classes=3), Discriminator(SHAPE, 8), latent_dim=8, num_classes=3)


# ---------------------------------------------------------------------------------------------- diffusion


def test_p_uncond_1_trains_an_unconditional_model():
    """Every label becomes the null class: the class rows never move and the labels do not matter at all."""
    trained = []
    for labels_seed in (0, 1):
        model = diffusion(p_uncond=1.0).train()
        start = model.net.class_emb.weight.detach().clone()
        optimizer = torch.optim.SGD(model.net.parameters(), lr=0.1)
        torch.manual_seed(5)
        x = torch.rand(8, *SHAPE) * 2 - 1
        y = torch.randint(CLASSES, (8,), generator=seeded(labels_seed))
        for _ in range(3):
            optimizer.zero_grad()
            model.training_step((x, y), 0).backward()
            optimizer.step()
        weights = model.net.class_emb.weight.detach()
        assert torch.equal(weights[:CLASSES], start[:CLASSES]) and not torch.equal(
            weights[CLASSES], start[CLASSES]
        )
        trained.append(torch.cat([p.detach().flatten() for p in model.net.parameters()]))
    assert torch.equal(trained[0], trained[1])


def test_p_uncond_0_1_drops_about_a_tenth_of_the_labels():
    model = diffusion(p_uncond=0.1).train()
    seen = []
    # record what the net reads
    model.net.forward = lambda x, t, y=None: seen.append(y) or torch.zeros_like(x)
    torch.manual_seed(0)
    y = torch.randint(CLASSES, (4000,))
    model.training_step((torch.zeros(4000, *SHAPE), y), 0)
    dropped = seen[0] == CLASSES
    assert torch.equal(seen[0][~dropped], y[~dropped]) and abs(float(dropped.float().mean()) - 0.1) < 0.015


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_guidance_0_is_the_unconditional_model_and_1_the_conditional_one_exactly(sampler):
    model = diffusion(sampler=sampler)
    net, labels = model.sampling_net, torch.tensor([0, 3, 7, 9])

    def reference(predict, seed: int = 0) -> torch.Tensor:
        """The sampler's own loop over a plain noise predictor, from the same noise (latents, then steps)."""
        generator = seeded(seed)
        x_T = model.draw_latents(4, generator)
        x = model.sampler.sample(predict, (4, *SHAPE), generator=generator, x_T=x_T)
        return ((x.clamp(-1, 1) + 1) / 2).float()

    unconditional = reference(lambda x, t: net(x, t, None))
    conditional = reference(lambda x, t: net(x, t, labels))
    assert torch.equal(model.sample(4, seeded(0), labels=labels, guidance=0.0), unconditional)
    assert torch.equal(model.sample(4, seeded(0), labels=labels, guidance=1.0), conditional)
    assert not torch.equal(unconditional, conditional)
    # any other w is eps_u + w (eps_c - eps_u) of the two predictions, from one batched pass
    w = 2.5
    guided = reference(lambda x, t: net(x, t, None) + w * (net(x, t, labels) - net(x, t, None)))
    assert torch.allclose(model.sample(4, seeded(0), labels=labels, guidance=w), guided, atol=1e-5)
    model.guidance_scale = w  # the module's default w
    assert torch.equal(
        model.sample(4, seeded(0), labels=labels), model.sample(4, seeded(0), labels=labels, guidance=w)
    )


def test_classifier_free_guidance_combines_the_predictions():
    calls = []

    def net(x, t, y):
        calls.append(None if y is None else y.tolist())
        return torch.zeros_like(x) if y is None else torch.ones_like(x) * (y[:, None] >= 0)

    x, t = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    guided = ClassifierFreeGuidance(net, torch.tensor([1, 2]), 3.0, null_label=-1)
    assert torch.equal(guided(x, t), torch.full((2, 3), 3.0))  # 0 + 3 (1 - 0)
    assert calls == [[1, 2, -1, -1]]  # one pass over the doubled batch: conditional rows, then null rows


# ---------------------------------------------------------------------------------------------- GAN, VAE


def test_conditional_gan_trains_with_the_hinge_loss_and_its_projection_sees_the_label():
    model = gan().train()
    real, y = torch.rand(6, *SHAPE) * 2 - 1, torch.arange(6) % CLASSES
    scores = model.discriminator(real, y)
    assert scores.shape == (6,) and not torch.allclose(scores, model.discriminator(real, (y + 1) % CLASSES))
    # projection: D(x, y) - D(x, y') is the inner product of embed(y) - embed(y') with the features
    features = model.discriminator.features(real).flatten(1)
    difference = (
        (model.discriminator.embed(y) - model.discriminator.embed((y + 1) % CLASSES)) * features
    ).sum(1)
    assert torch.allclose(scores - model.discriminator(real, (y + 1) % CLASSES), difference, atol=1e-5)
    import lightning as L

    before = [p.detach().clone() for p in model.generator.parameters()]
    data = torch.utils.data.TensorDataset(torch.rand(16, *SHAPE) * 2 - 1, torch.arange(16) % CLASSES)
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    model.optimizer_factory = lambda params, **kw: torch.optim.Adam(params, **{"lr": 1e-3, **kw})
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=8))
    assert math.isfinite(float(trainer.callback_metrics["train/d_loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters()))
    assert not torch.equal(model.generator.label_emb.weight, gan().generator.label_emb.weight)  # learnt


def test_cvae_encoder_and_decoder_read_the_label():
    model = vae()
    x = torch.rand(3, *SHAPE) * 2 - 1
    y0, y1 = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    assert not torch.allclose(model.net.encode(x, y0)[0], model.net.encode(x, y1)[0])
    z = torch.randn(3, 4)
    assert not torch.allclose(model.net.decode(z, y0), model.net.decode(z, y1))
    loss = model.training_step((x, y0), 0)
    assert loss.ndim == 0 and math.isfinite(float(loss))
    with pytest.raises(ConfigError, match="reconstruct\\(x, labels\\) needs the labels"):
        model.reconstruct(x)


# ---------------------------------------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's real 8x8 digits (offline), and a small classifier trained on them for a few seconds."""
    dm = ImageDataModule(dataset="digits", batch_size=64, image_shape=SHAPE)
    dm.setup()
    torch.manual_seed(0)
    net = ConvClassifier(SHAPE, num_classes=CLASSES, channels=(8, 16), feature_dim=32, dropout=0.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = dm.data["train"][list(range(len(dm.data["train"])))]
    for step in range(30):
        batch = torch.arange(step * 128, (step + 1) * 128) % len(y)
        optimizer.zero_grad()
        F.cross_entropy(net(x[batch]), y[batch]).backward()
        optimizer.step()
    return dm, Classifier(net.eval())


def save(classifier: Classifier, path: Path) -> Path:
    checkpoint = {"state_dict": classifier.state_dict(), "epoch": 0}
    classifier.on_save_checkpoint(checkpoint)
    checkpoint["trained_on"] = "digits"
    torch.save(checkpoint, path)
    return path


def test_conditional_accuracy_of_the_real_test_split_is_the_classifiers_test_accuracy(digits, tmp_path):
    dm, classifier = digits
    test = dm.data["test"]
    x, y = test[list(range(len(test)))]  # floats in [-1, 1] and the true labels
    with torch.no_grad():
        logits = classifier.net(x)
    accuracy = float(MulticlassAccuracy(CLASSES, average="micro")(logits, y))
    per_class = MulticlassAccuracy(CLASSES, average="none")(logits, y)
    assert 0.5 < accuracy < 1.0  # a real, imperfect classifier: the check below can tell hits from misses

    metrics = ClassMetrics(save(classifier, tmp_path / "c.ckpt"), "classifier-digits", batch_size=50)
    real_uint8 = test.images  # the test images as the metrics see samples: uint8
    out = metrics.evaluate_samples(real_uint8, dm, labels=y)
    n = len(y)
    # torchmetrics computes in float32
    assert out[f"cond_acc/classifier-digits/{n}"] == pytest.approx(accuracy, abs=1e-6)
    for c in range(CLASSES):
        assert out[f"cond_acc/class{c}/classifier-digits/{n}"] == pytest.approx(float(per_class[c]), abs=1e-6)
    # and the real test split covers every class of the data: nothing missing, KL near 0
    assert (
        out[f"missing_classes/classifier-digits/{n}"] == 0 and out[f"class_kl/classifier-digits/{n}"] < 0.05
    )


def test_a_model_that_draws_one_class_misses_nine(digits, tmp_path):
    dm, classifier = digits
    metrics = ClassMetrics(save(classifier, tmp_path / "c.ckpt"), "classifier-digits")
    one_image = dm.data["test"].images[:1].expand(200, -1, -1, -1)  # a collapsed model: one digit, 200 times
    out = metrics.evaluate_samples(one_image.contiguous(), dm)
    assert out["missing_classes/classifier-digits/200"] == 9
    shares = torch.tensor([out[f"class_share/class{c}/classifier-digits/200"] for c in range(CLASSES)])
    assert sorted(shares.tolist())[-1] == 1.0 and shares.sum() == 1.0
    # KL(one class || data) = -log(the data's share of that class)
    train_labels = dm.data["train"].labels
    k = int(shares.argmax())
    assert out["class_kl/classifier-digits/200"] == pytest.approx(
        -math.log(float((train_labels == k).float().mean()))
    )
    # no labels asked for: no conditional accuracy
    assert not any(name.startswith("cond_acc/") for name in out)


def test_coverage_and_accuracy_by_hand():
    uniform = torch.full((4,), 0.25)
    coverage = mode_coverage(torch.tensor([0, 0, 1, 1, 2, 2, 2, 2]), uniform)
    assert coverage["shares"].tolist() == [0.25, 0.25, 0.5, 0.0] and coverage["missing"] == 1
    assert coverage["kl"] == pytest.approx(0.25 * math.log(1) * 2 + 0.5 * math.log(2))
    # a class at exactly half its share is not missing; under half is
    assert mode_coverage(torch.tensor([0, 1, 1, 1, 2, 2, 3, 3]), uniform)["missing"] == 0
    mean, per_class = conditional_accuracy(torch.tensor([0, 1, 1, 3]), torch.tensor([0, 1, 2, 2]), 4)
    assert mean == 0.5 and per_class[:3].tolist() == [1.0, 1.0, 0.0] and math.isnan(per_class[3])
    assert balanced_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
