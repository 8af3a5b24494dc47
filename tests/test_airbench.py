"""airbench's ingredients as options (issue 13): patch whitening, frozen norm scales,
lookahead averaging, alternating flip, flip-and-translate TTA, decoupled SGD units and
the warmup-then-linear-decay schedule; each checked alone, refused with its key when
wrong, shown by `sampler inspect`, and all together in a run that resumes exactly."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import TINY, read_metrics
from sampler.blocks import build_model
from sampler.blocks.whiten import PatchWhitening, fit_whitening
from sampler.experiments.data import Split, TensorLoader
from sampler.experiments.errors import ConfigError
from sampler.experiments.train.loop import TTA, evaluate, tta_mode
from sampler.experiments.train.optim import (MuonSGD, build_lookahead, build_optimizer, build_scheduler,
                                             check_optimizer, orthogonalize)
from test_faults import env, figures, start, wait_for_epochs  # noqa: F401  (env: a fixture)

ALL_ON = ["model.whiten=true", "model.norm_args.freeze_scale=true", "trainer.ema=0.9", "trainer.ema_every=3",
          "data.augment.flip=alternate", "trainer.tta=flip_translate", "optim.decoupled=true", "optim.lr=2.0",
          "optim.norm_lr_scale=4"]


def correlated_images(n: int = 64) -> torch.Tensor:
    x = torch.randn(n, 3, 12, 12) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    x[:, 1] += x[:, 0]  # channels and neighbouring pixels correlated
    return x + 0.5 * x.roll(1, dims=3)


# ---------------------------------------------------------------- 1. patch whitening

def test_whitening_conv_decorrelates_the_training_patches_and_is_frozen() -> None:
    model = build_model(widths=[8], whiten=True, whiten_args={"kernel_size": 2, "eps": 1e-6})
    layer = model.encoder[0][0].conv
    assert isinstance(layer, PatchWhitening) and layer.out_channels == 24 and not layer.weight.requires_grad
    images = correlated_images()
    assert fit_whitening(model, lambda n: images) == 1
    out = nn.functional.conv2d(images, layer.weight)  # without the bias
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    assert torch.allclose(half.T @ half / len(half), torch.eye(12), atol=1e-3)
    assert torch.equal(layer.weight[12:], -layer.weight[:12])  # each filter with its negative
    opt = build_optimizer(model, "sgd", lr=0.1)
    assert all(p is not layer.weight for g in opt.param_groups for p in g["params"])


def test_whitening_width_keeps_the_top_eigenvectors_and_the_map_loses_a_pixel() -> None:
    model = build_model(widths=[8], whiten=True, whiten_args={"width": 8}, input_size=12)
    fit_whitening(model, lambda n: correlated_images())
    assert model.encoder[0][0].conv.out_channels == 8
    assert model.encoder[0](torch.zeros(2, 3, 12, 12)).shape == (2, 8, 11, 11)
    assert fit_whitening(build_model(widths=[8]), lambda n: pytest.fail("no image is needed without whiten")) == 0


@pytest.mark.parametrize("kwargs,key", [
    ({"whiten": "yes"}, "model.whiten"),
    ({"whiten": True, "whiten_args": {"width": 7}}, "model.whiten_args.width"),
    ({"whiten": True, "whiten_args": {"width": 26}}, "model.whiten_args.width"),
    ({"whiten": True, "whiten_args": {"kernel_size": 0}}, "model.whiten_args.kernel_size"),
    ({"whiten": True, "whiten_args": {"eps": 0}}, "model.whiten_args.eps"),
    ({"whiten_args": {"sizes": 2}}, "model.whiten_args.sizes"),
    ({"norm_args": {"freeze_scale": "yes"}}, "model.norm_args.freeze_scale"),
    ({"norm_args": {"freeze_scale": True, "affine": False}}, "model.norm_args.freeze_scale"),
])
def test_bad_model_options_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model(widths=[8], **kwargs)
    assert err.value.key == key


# ---------------------------------------------------------------- 2. frozen norm scales

@pytest.mark.parametrize("norm", ["batch", "group", "instance", "layer"])
def test_frozen_norm_scales_stay_at_one_while_biases_train(norm: str) -> None:
    model = build_model(widths=[8, 8], norm=norm, norm_args={"freeze_scale": True, "num_groups": 2})
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d))]
    assert norms and all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)
    opt = build_optimizer(model, "sgd", lr=0.5, norm_lr_scale=2.0)
    nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.arange(4)).backward()
    opt.step()
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert any(m.bias.abs().sum() > 0 for m in norms)
    assert opt.param_groups[2]["lr"] == 1.0 and {id(p) for p in opt.param_groups[2]["params"]} == \
        {id(m.bias) for m in norms}


# ---------------------------------------------------------------- 3. lookahead (EMA) weights

def lookahead_run(steps: int, state: dict | None = None) -> tuple[nn.Module, dict]:
    """`steps` SGD steps of 12 (4 an epoch) with lookahead; from a `state` it goes on from
    where that run stopped, as a resumed run does."""
    torch.manual_seed(0)
    model = build_model(widths=[4])
    opt = build_optimizer(model, "sgd", lr=0.1)
    lookahead = build_lookahead(model, opt, steps_per_epoch=4, total_steps=12, ema=0.9, every=3)
    data = torch.Generator().manual_seed(1)
    xs = [torch.randn(4, 3, 8, 8, generator=data) for _ in range(12)]
    done = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        lookahead.load_state_dict(state["lookahead"])
        done = lookahead.step
    for x in xs[done:steps]:
        nn.functional.cross_entropy(model(x), torch.arange(4)).backward()
        opt.step()
        opt.zero_grad()
    return model, {"model": model.state_dict(), "opt": opt.state_dict(), "lookahead": lookahead.state_dict(),
                   "averaged": lookahead.averaged.module.state_dict(), "kept": lookahead.kept}


def test_lookahead_syncs_the_model_to_the_average_on_schedule_and_resumes_exactly() -> None:
    _, state = lookahead_run(4)  # synced at step 3 (every 3) and 4 (the epoch's end)
    assert state["lookahead"]["synced"] == 4 and 0 < state["kept"] < 0.9  # ramped: (4/12)^3 of 0.9
    for mine, averaged in zip(state["model"].values(), state["averaged"].values()):
        assert torch.equal(mine, averaged)  # an evaluation at the epoch's end sees the averaged weights
    full, _ = lookahead_run(12)
    _, stopped = lookahead_run(5)  # between syncs
    assert stopped["lookahead"]["step"] == 5 and stopped["lookahead"]["synced"] == 4
    resumed, _ = lookahead_run(12, stopped)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    model = build_model(widths=[4])
    assert build_lookahead(model, build_optimizer(model, "sgd", lr=0.1), 4, 12, ema=0.0) is None


@pytest.mark.parametrize("ema,every,key", [(1.0, 5, "trainer.ema"), (-0.1, 5, "trainer.ema"),
                                           ("x", 5, "trainer.ema"), (0.9, 0, "trainer.ema_every")])
def test_bad_lookahead_values_name_the_key(ema, every, key: str) -> None:
    model = build_model(widths=[4])
    with pytest.raises(ConfigError) as err:
        build_lookahead(model, build_optimizer(model, "sgd", lr=0.1), 4, 12, ema=ema, every=every)
    assert err.value.key == key


# ---------------------------------------------------------------- 4. alternating flip

def flip_loader(images: torch.Tensor, flip) -> TensorLoader:
    split = Split(images, torch.arange(len(images)))
    return TensorLoader(split, len(images), (0.0,), (1 / 255,), torch.device("cpu"), shuffle=True, flip=flip,
                        generator=torch.Generator().manual_seed(0))


def mirrored(x: torch.Tensor, y: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per image (by label = index): whether the batch holds it mirrored."""
    order = y.argsort()
    return torch.tensor([torch.equal(x[order][i], images[i].float().flip(2)) for i in range(len(images))])


def test_alternate_flip_mirrors_a_random_half_then_every_image_every_other_epoch() -> None:
    images = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8)
    loader = flip_loader(images, "alternate")
    epochs = [mirrored(x, y, images) for x, y in (next(iter(loader)) for _ in range(4))]
    assert 10 < epochs[0].sum() < 54
    assert torch.equal(epochs[1], ~epochs[0]) and torch.equal(epochs[2], epochs[0])
    assert torch.equal(epochs[3], ~epochs[0])
    resumed = flip_loader(images, "alternate")
    resumed.generator.set_state(loader.generator.get_state())
    resumed.epoch = 4  # as a resumed run's loader is set from the checkpoint
    again = flip_loader(images, "alternate")
    for _ in range(4):
        next(iter(again))
    (x1, y1), (x2, y2) = next(iter(resumed)), next(iter(again))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize("flip", ["sometimes", 1])
def test_a_bad_flip_names_the_key_and_the_choices(flip) -> None:
    with pytest.raises(ConfigError, match="alternate") as err:
        flip_loader(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), flip)
    assert err.value.key == "data.augment.flip"


# ---------------------------------------------------------------- 5. test-time augmentation

class Counting(nn.Module):
    """Mean of each channel (flip and shift invariant up to the border): logits of 3 'classes'."""

    def __init__(self, dense: bool = False):
        super().__init__()
        self.calls, self.dense = 0, dense
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.w if self.dense else x.mean((2, 3)) * self.w


@pytest.mark.parametrize("tta,views", [(False, 1), (True, 2), ("flip", 2), ("flip_translate", 6)])
def test_tta_modes_average_their_views(tta, views: int) -> None:
    x = torch.rand(4, 3, 6, 6)
    y = x.mean((2, 3)).argmax(1)
    model = Counting()
    scores = evaluate(model, [(x, y)], nn.CrossEntropyLoss(), contextlib.nullcontext, tta)
    assert model.calls == views and scores["acc"] > 0.7
    dense = Counting(dense=True)
    evaluate(dense, [(x, x.argmax(1))], nn.CrossEntropyLoss(), contextlib.nullcontext, tta)
    out = TTA.get(tta_mode(tta))(dense, x)  # a per-pixel model: every view put back on its pixels
    assert torch.allclose(out[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1], atol=1e-6)


def test_a_bad_tta_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError, match="flip_translate") as err:
        tta_mode("mirror")
    assert err.value.key == "trainer.tta"


# ---------------------------------------------------------------- 6. decoupled SGD units

def test_decoupled_lr_and_decay_are_per_1024_images_whatever_the_batch_and_momentum() -> None:
    model = build_model(widths=[4], norm_args={"freeze_scale": True})
    for batch, momentum in ((256, 0.85), (512, 0.85), (256, 0.9)):
        opt = build_optimizer(model, "sgd", lr=11.5, momentum=momentum, weight_decay=0.0153, decoupled=True,
                              decay_norm_and_bias=True, norm_lr_scale=64.0, batch_size=batch)
        weights, biases, norms = opt.param_groups
        gain = 1 + 1 / (1 - momentum)
        assert weights["lr"] == pytest.approx(11.5 * batch / 1024 / gain)  # airbench's per-image step
        assert norms["lr"] == pytest.approx(64 * weights["lr"])
        for group in opt.param_groups:  # the decay per step is the same in every group, lr aside
            assert group["lr"] * group["weight_decay"] == pytest.approx(0.0153 * batch / 1024 / gain)
    plain = build_optimizer(model, "sgd", lr=0.1, weight_decay=5e-4)
    assert [g["lr"] for g in plain.param_groups] == [0.1] * 3


@pytest.mark.parametrize("kwargs,key", [
    ({"decoupled": "yes"}, "optim.decoupled"),
    ({"decoupled": True, "momentum": 1.0}, "optim.momentum"),
    ({"norm_lr_scale": 0}, "optim.norm_lr_scale"),
    ({"batch_size": 64}, "optim.batch_size"),
])
def test_bad_optim_options_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_optimizer("sgd", lr=1.0, **kwargs)
    assert err.value.key == key


# ---------------------------------------------------------------- 7. warmup then linear decay

def test_onecycle_is_airbenchs_warmup_then_linear_decay() -> None:
    total = 200
    opt = build_optimizer(nn.Linear(2, 2), "sgd", lr=1.0)
    sched = build_scheduler(opt, total, 20, "onecycle", pct_start=0.23, initial_lr_ratio=0.2, final_lr_ratio=0.07)
    warmup = total * 0.23
    for step in range(total):
        frac = step / warmup if step < warmup else (step - warmup) / (total - warmup)
        expected = 0.2 * (1 - frac) + frac if step < warmup else (1 - frac) + 0.07 * frac  # airbench94's get_lr
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
        opt.step()
        sched.step()


# ---------------------------------------------------------------- 8. identity init, PyTorch's init, the head

def test_dirac_starts_each_conv_unit_as_the_identity_on_its_first_filters() -> None:
    torch.manual_seed(0)
    model = build_model(widths=[8, 16, 16], dirac=True, norm="none", act="none", pool="none",
                        conv_args={"bias": False}, whiten=True, input_size=9)
    x = torch.randn(2, 8, 6, 6)
    widen = model.encoder[2][0].conv  # 8 -> 16: the first 8 filters copy the input, the others stay random
    out = widen(x)
    assert torch.equal(out[:, :8], x) and out[:, 8:].abs().sum() > 0
    same = model.encoder[3][0].conv  # 16 -> 16: the identity, every filter
    y = torch.randn(2, 16, 6, 6)
    assert torch.equal(same(y), y)
    assert isinstance(model.encoder[0][0].conv, PatchWhitening)  # fitted from data later, never dirac'd
    grouped = build_model(widths=[8, 8], dirac=True, conv_args={"groups": 2, "bias": False}, in_channels=4)
    z = torch.randn(2, 8, 5, 5)
    assert torch.equal(grouped.encoder[1][0].conv(z), z)  # per group: each channel to itself
    plain = build_model(widths=[8, 8], conv_args={"bias": False})
    assert not torch.equal(plain.encoder[1][0].conv(z), z)


def test_init_torch_is_pytorchs_default_fan_in_uniform_as_airbench() -> None:
    torch.manual_seed(0)
    model = build_model(widths=[64, 256], init="torch")
    conv = model.encoder[1][0].conv
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx(1 / (3 * fan_in) ** 0.5, rel=0.03)
    assert conv.weight.abs().max().item() <= 1 / fan_in ** 0.5  # uniform in +-1/sqrt(fan_in)
    fc = model.head.fc
    assert fc.weight.std().item() == pytest.approx(1 / (3 * 256) ** 0.5, rel=0.1) and not fc.bias.any()
    he = build_model(widths=[64, 256]).encoder[1][0].conv  # torchvision's: sqrt(2 / fan_out)
    assert he.weight.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.03)


def test_the_linear_head_max_pools_drops_its_bias_and_scales_the_logits() -> None:
    torch.manual_seed(0)
    model = build_model(widths=[8], norm="none", global_pool="max", bias=False, scale=1 / 9)
    head = model.head
    assert head.fc.bias is None and isinstance(head.pool, nn.AdaptiveMaxPool2d)
    features = torch.randn(3, 8, 4, 4)
    expected = features.amax(dim=(2, 3)) @ head.fc.weight.T / 9
    assert torch.allclose(head(features), expected, atol=1e-6)
    opt = build_optimizer(model, "sgd", lr=0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("kwargs,key", [
    ({"init": "xavier"}, "model.init"), ({"dirac": "yes"}, "model.dirac"),
    ({"global_pool": "min"}, "head.global_pool"), ({"bias": 1}, "head.bias"),
    ({"scale": 0}, "head.scale"), ({"scale": "big"}, "head.scale"),
])
def test_bad_init_and_head_options_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model(widths=[8], **kwargs)
    assert err.value.key == key


# ---------------------------------------------------------------- the CLI: errors, inspect, a resumed run

@pytest.mark.parametrize("arg,key", [("trainer.tta=mirror", "trainer.tta"), ("trainer.ema=1.5", "trainer.ema"),
                                     ("data.augment.flip=sometimes", "data.augment.flip"),
                                     ("model.whiten_args.width=5", "model.whiten_args.width"),
                                     ("optim.decoupled=maybe", "optim.decoupled")])
def test_bad_options_are_refused_before_any_data_is_read(cli, tmp_path: Path, arg: str, key: str) -> None:
    proc = cli("train", *TINY, "model.whiten=true", arg, data=tmp_path / "no-data-here")
    assert proc.returncode == 2 and key in proc.stderr and "Traceback" not in proc.stderr


def test_inspect_and_ls_show_the_ingredients(cli) -> None:
    out = cli("inspect", "experiment=cifar10_90", check=True).stdout
    for text in ("PatchWhitening", "patch whitening", "6 norm scales fixed at 1", "per 1024 images",
                 "name=onecycle", "pct_start=0.23", "lookahead: ema 0.95", "flip=alternate", "tta: flip_translate"):
        assert text in out, text
    dirac = cli("inspect", "experiment=cifar10_90", "model.init=torch", "model.dirac=true",
                "head.global_pool=max", "head.scale=0.111", check=True).stdout
    for text in ("init: torch", "6 conv units start as the identity", "AdaptiveMaxPool2d", "Scale"):
        assert text in dirac, text
    listing = cli("ls", check=True).stdout
    assert "flip_translate" in listing and "alternate" in listing and "cifar10_90" in listing


# ---------------------------------------------------------------- 9. Muon on the conv filters

@pytest.mark.parametrize("shape", [(16, 72), (72, 16), (24, 48)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_orthogonalize_brings_every_singular_value_near_one_along_the_gradients_directions(shape, dtype) -> None:
    torch.manual_seed(0)
    g = torch.randn(*shape) * torch.logspace(0, 1, shape[1])  # a decade of column scales: condition 4-15
    assert torch.linalg.cond(g) > 3
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    for steps in (3, 5):
        o = orthogonalize(g, steps, dtype)
        assert o.shape == g.shape and o.dtype == g.dtype
        s = torch.linalg.svdvals(o)
        assert 0.6 < s.min() and s.max() < 1.25, (steps, s.min(), s.max())  # not U V^T exactly: Muon's choice
        cos = torch.nn.functional.cosine_similarity(o.flatten(), (u @ vh).flatten(), dim=0)
        assert cos > 0.975, (steps, cos)


def test_muon_steps_the_filters_by_the_orthogonalised_nesterov_momentum_and_the_rest_by_sgd() -> None:
    torch.manual_seed(0)
    model = build_model(widths=[4, 8], whiten=True, norm_args={"freeze_scale": True}, num_classes=3)
    opt = build_optimizer(model, "muon", lr=0.1, momentum=0.6, ns_steps=3, sgd_lr=2.0, sgd_momentum=0.85,
                          weight_decay=0.01, batch_size=64)
    assert isinstance(opt, MuonSGD)
    (muon,) = [g for g in opt.param_groups if g.get("muon")]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    whiten = [m for m in convs if not m.weight.requires_grad]
    assert len(whiten) == 1 and all(p is not whiten[0].weight for p in muon["params"])
    assert {id(p) for p in muon["params"]} == {id(m.weight) for m in convs if m.weight.requires_grad}
    rest = {id(p) for g in opt.param_groups if not g.get("muon") for p in g["params"]}
    assert not rest & {id(p) for p in muon["params"]} and rest  # the head, biases and norm biases
    x = torch.randn(8, 3, 12, 12)
    fit_whitening(model, lambda n: x[:n])
    before = {id(p): p.detach().clone() for p in model.parameters()}
    grads = {}
    for i in range(2):  # the second step uses the momentum buffer
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), torch.arange(8) % 3).backward()
        grads[i] = {id(p): p.grad.clone() for p in model.parameters() if p.grad is not None}
        expected = {}
        for p in muon["params"]:
            g0 = grads[0][id(p)]
            buf = g0 if i == 0 else 0.6 * g0 + grads[1][id(p)]
            update = grads[i][id(p)] + 0.6 * buf  # Nesterov
            w = p.detach() * len(p) ** 0.5 / p.detach().norm()  # rescaled to norm sqrt(out) first
            expected[id(p)] = w - 0.1 * orthogonalize(update.reshape(len(p), -1), 3).view_as(p)
        opt.step()
        for p in muon["params"]:
            torch.testing.assert_close(p.detach(), expected[id(p)])
            assert p.grad is not None  # handed back after SGD's step skipped it
    head = model.head.linear.weight if hasattr(model.head, "linear") else next(
        m.weight for m in model.modules() if isinstance(m, nn.Linear))
    assert not torch.equal(head.detach(), before[id(head)])  # SGD trained the rest
    assert all(torch.equal(p, before[id(p)]) for p in whiten[0].parameters() if not p.requires_grad)


@pytest.mark.parametrize("kwargs,key", [
    ({"momentum": 1.0}, "optim.momentum"),
    ({"sgd_momentum": -0.1}, "optim.sgd_momentum"),
    ({"sgd_lr": 0}, "optim.sgd_lr"),
    ({"ns_steps": 0}, "optim.ns_steps"),
    ({"ns_steps": 2.5}, "optim.ns_steps"),
    ({"normalize": "yes"}, "optim.normalize"),
])
def test_bad_muon_options_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_optimizer("muon", lr=0.1, **kwargs)
    assert err.value.key == key


def test_muon_on_a_model_without_trainable_conv_filters_is_refused() -> None:
    with pytest.raises(ConfigError, match="optim=sgd"):
        build_optimizer(nn.Linear(4, 2), "muon", lr=0.1, batch_size=64)


def test_inspect_shows_muon_and_what_the_rest_trains_with(cli) -> None:
    out = cli("inspect", "experiment=cifar10_90", "optim=muon", check=True).stdout  # muon's own values
    text = " ".join(out.split())
    assert "muon on 6 conv filter banks: lr 0.08 per update, momentum 0.6 (Nesterov), 3 Newton-Schulz steps" in text
    assert "the rest Nesterov SGD" in text and "sgd_lr" in text


LONG = ["data.subset=2000", "data.val_size=100", "trainer.epochs=3", "model.widths=[8,16]",
        "trainer.batch_size=10", "trainer.threads=1", "trainer.eval_batch_size=100"]


MUON = [a for a in ALL_ON if not a.startswith("optim.")] + ["optim=muon", "optim.lr=0.05", "optim.sgd_lr=2.0",
                                                           "optim.norm_lr_scale=4"]


@pytest.mark.parametrize("ALL_ON", [ALL_ON, MUON], ids=["sgd", "muon"])
def test_a_run_with_every_ingredient_stopped_mid_epoch_resumes_exactly(tmp_path: Path, env: dict, ALL_ON) -> None:
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "sampler.cli.app", "train", *LONG, *ALL_ON,
                    f"hydra.run.dir={reference}"], cwd=tmp_path, env=env, check=True, capture_output=True)
    full = read_metrics(reference)
    assert full["status"] == "completed" and full["test/acc"] > 0.1
    run = tmp_path / "run"
    proc = start(tmp_path, env, "train", *LONG, *ALL_ON, f"hydra.run.dir={run}")
    wait_for_epochs(run, 1, proc)
    time.sleep(0.25)
    proc.send_signal(signal.SIGTERM)  # inside epoch 2: the lookahead is between syncs, the flip on odd parity
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] > 0 and checkpoint["lookahead"]["step"] > 0, "the signal should land inside epoch 2"
    done = subprocess.run([sys.executable, "-m", "sampler.cli.app", "train", *LONG, *ALL_ON, f"resume={run}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert figures(read_metrics(run)) == figures(full)


def test_whitening_with_a_dense_head_is_refused_naming_model_whiten() -> None:
    with pytest.raises(ConfigError, match="model.whiten=false"):
        build_model(widths=[8, 16], head="decoder", whiten=True, num_classes=3)


# airbench94's hyperparameters (KellerJordan/cifar10-airbench legacy/airbench94.py), as
# sampler's keys: cifar10_94 must stay that recipe. 9.9 epochs become 10; batchnorm_momentum
# 0.6 is torch's 0.4 (the weight of the new batch); kilostep lr and decay are optim.decoupled.
AIRBENCH94 = {
    "trainer.batch_size": 1024, "trainer.epochs": 10, "trainer.label_smoothing": 0.2,
    "trainer.tta": "flip_translate", "trainer.ema": 0.95, "trainer.ema_every": 5, "trainer.compile": "auto",
    "optim.name": "sgd", "optim.decoupled": True, "optim.lr": 11.5, "optim.momentum": 0.85, "optim.nesterov": True,
    "optim.weight_decay": 0.0153, "optim.norm_lr_scale": 64.0, "optim.decay_norm_and_bias": True,
    "sched.name": "onecycle", "sched.pct_start": 0.23, "sched.initial_lr_ratio": 0.2, "sched.final_lr_ratio": 0.07,
    "data.augment.crop_padding": 2, "data.augment.flip": "alternate", "data.val_size": 0,
    "model.whiten": True, "model.widths": [64, 256, 256], "model.convs_per_stage": 2, "model.pool_unit": "first",
    "model.order": ["conv", "pool", "norm", "act"], "model.act": "gelu", "model.init": "torch", "model.dirac": True,
    "model.norm_args.momentum": 0.4, "model.norm_args.eps": 1e-12, "model.norm_args.freeze_scale": True,
    "head.global_pool": "max", "head.bias": False,
}


def test_the_cifar10_94_preset_is_airbench94s_recipe() -> None:
    from sampler.experiments.runs.hparams import flatten
    from sampler.experiments.tools.config import compose
    from sampler.experiments.train.env import resolve_compile

    cfg = flatten(compose(["experiment=cifar10_94"]))
    assert {k: cfg[k] for k in AIRBENCH94} == AIRBENCH94
    assert cfg["head.scale"] == pytest.approx(1 / 9)
    assert not resolve_compile(cfg["trainer.compile"], torch.device("cpu"))  # eager on a CPU
    muon = flatten(compose(["experiment=cifar10_94", "optim=muon"]))  # another optimizer: its own values
    assert muon["optim.name"] == "muon" and muon["optim.lr"] == 0.08 and "optim.decoupled" not in muon
