"""Segmentation: dense heads, CamVid in memory, joint augmentation, metrics, and a real run."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import read_metrics, run_dirs
from sampler.blocks import HEAD_STYLES, UPSAMPLERS, ConfigError, Segmenter, build_encoder, build_model
from sampler.blocks.heads import PixelShuffle, Transposed
from sampler.experiments.data import SegmentationLoader, Split
from sampler.experiments.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE, load_camvid, load_camvid_tensors
from sampler.experiments.data.pets import load_pets
from sampler.experiments.train.metrics import (VOID, SegmentationMeter, boundaries, boundary_counts, colorize,
                                              confusion_matrix, confusion_scores, median_frequency_weights,
                                              prediction_grid)


def build_segmenter(**kwargs):
    """A dense model through the one builder (head=decoder; head errors are named head.*)."""
    return build_model(head="decoder", **{"num_classes": 11, **kwargs})

SIZES = [(32, 48), (45, 37)]  # even, and odd sides that floor-mode pooling does not halve evenly
COMBOS = list(itertools.product(HEAD_STYLES.names(), UPSAMPLERS.names(), [False, True]))
INVALID = {("oneshot", "unpool"): "upsample", ("oneshot", "skips"): "skips"}


def invalid_key(style: str, upsample: str, skips: bool) -> str | None:
    return INVALID.get((style, upsample)) or (INVALID.get((style, "skips")) if skips else None)


# ---------------------------------------------------------------- heads

@pytest.mark.parametrize("style,upsample,skips", COMBOS, ids=lambda v: str(v))
def test_every_head_and_upsampling_keeps_the_input_size(style: str, upsample: str, skips: bool) -> None:
    kwargs = dict(widths=[8, 16, 32], num_classes=5, style=style, upsample=upsample, skips=skips)
    key = invalid_key(style, upsample, skips)
    if key is not None:
        with pytest.raises(ConfigError) as err:
            build_segmenter(**kwargs)
        assert err.value.key == f"head.{key}" and "progressive" in err.value.message
        return
    model = build_segmenter(**kwargs)
    for height, width in SIZES:
        x = torch.randn(2, 3, height, width, requires_grad=True)
        out = model(x)
        assert out.shape == (2, 5, height, width)
        out.square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("upsample", ["bilinear", "bicubic"])
def test_align_corners_reaches_the_interpolation(upsample: str) -> None:
    model = build_segmenter(widths=[8, 16], upsample=upsample, align_corners=True)
    assert all(m.align_corners for m in model.modules() if hasattr(m, "mode"))
    assert model(torch.randn(1, 3, 33, 35)).shape[-2:] == (33, 35)


@pytest.mark.parametrize("upsample", ["nearest", "transposed", "pixel_shuffle", "unpool"])
def test_align_corners_is_refused_where_it_means_nothing(upsample: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_segmenter(widths=[8, 16], upsample=upsample, align_corners=True)
    assert err.value.key == "head.align_corners" and "bilinear and bicubic" in err.value.message


@pytest.mark.parametrize("kwargs,key,needle", [
    (dict(pool="avg"), "upsample", "model.pool=max"),
    (dict(pool="conv"), "upsample", "model.pool=max"),
    (dict(order=["conv", "pool", "norm", "act"], pool="avg"), "upsample", "model.pool=max"),
    (dict(order=["pool", "conv", "norm", "act"]), "upsample", "after the conv"),
    (dict(conv_args={"stride": 2}), "upsample", "stride"),
    (dict(style="fcn"), "style", "oneshot, progressive"),
    (dict(upsample="lanczos", style="progressive"), "upsample", "bicubic, bilinear, nearest, pixel_shuffle"),
    (dict(skips="yes", upsample="bilinear"), "skips", "true or false"),
    (dict(conv_args={"kernel_size": 2}, upsample="bilinear"), "name", "odd"),
])
def test_invalid_combinations_name_the_key(kwargs: dict, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_segmenter(**{"widths": [8, 16], "upsample": "unpool", **kwargs})
    assert err.value.key == f"head.{key}" and needle in err.value.message


@pytest.mark.parametrize("encoder", [
    dict(convs_per_stage=2, pool_unit="first", upsample="unpool"),
    dict(order=["conv", "pool", "norm", "act"], upsample="unpool"),
    dict(pool="avg", upsample="transposed"),
    dict(pool="conv", upsample="pixel_shuffle"),
    dict(pool="none", upsample="nearest"),
    dict(conv_args={"stride": 2}, pool="none", upsample="bicubic"),
    dict(norm="group", norm_args={"num_groups": 4}, act="gelu", upsample="bilinear"),
], ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_heads_combine_with_the_encoder_options(encoder: dict) -> None:
    model = build_segmenter(widths=[8, 16], skips=True, **encoder)
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        out = model(x)
        assert out.shape == (2, 11, *size)
        out.mean().backward()
    decoder_norms = [m for m in model.head.modules() if isinstance(m, nn.GroupNorm)]
    assert bool(decoder_norms) == (encoder.get("norm") == "group")  # decoder units are built like the encoder's


def test_unpool_works_with_max_pool_after_norm_and_act_and_with_a_stem() -> None:
    model = build_segmenter(widths=[8, 16], stem_width=4, order=["conv", "norm", "act", "pool"], upsample="unpool",
                            skips=True)
    assert model.head.needs_indices
    assert model(torch.randn(2, 3, 31, 29)).shape == (2, 11, 31, 29)


def test_features_with_indices_match_features_and_unpool_puts_maxima_back() -> None:
    encoder = build_encoder(widths=[4, 8])
    x = torch.randn(2, 3, 17, 22)
    plain = encoder.features(x)
    feats, pools = encoder.features_with_indices(x)
    assert all(torch.equal(a, b) for a, b in zip(plain, feats))
    pooled = feats[0]
    assert tuple(pools[0].input_size) == (17, 22)
    restored = F.max_unpool2d(pooled, pools[0].indices, 2, 2, output_size=pools[0].input_size)
    # every kept maximum sits where it came from: pooling the restored map gives it back
    assert torch.equal(F.max_pool2d(restored, 2, 2), pooled.clamp(min=0)) or torch.equal(
        F.max_pool2d(restored, 2, 2), pooled)


def test_transposed_starts_as_bilinear_interpolation() -> None:
    up = Transposed(3, 2, smooth_init=True)
    up.init_smooth()
    x = torch.randn(1, 3, 10, 12)
    ours = up(x, (20, 24))
    reference = F.interpolate(x, size=(20, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(ours[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], atol=1e-5)


def test_pixel_shuffle_starts_as_a_conv_then_nearest_upsampling() -> None:
    up = PixelShuffle(4, 2, smooth_init=True)
    up.init_smooth()
    x = torch.randn(1, 4, 6, 7)
    out = up(x, (12, 14))
    assert torch.equal(out[..., 0::2, 0::2], out[..., 1::2, 1::2])
    assert torch.equal(out[..., 0::2, 0::2], out[..., 0::2, 1::2])


def test_odd_sizes_round_trip_through_every_stage() -> None:
    model = build_segmenter(widths=[4, 4, 4, 4], upsample="pixel_shuffle", skips=True)
    for size in [(45, 61), (181, 239), (16, 17)]:
        assert model(torch.randn(1, 3, *size)).shape[-2:] == size


# ---------------------------------------------------------------- metrics

def test_confusion_scores_match_torchmetrics() -> None:
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4, 20, 30), generator=g)
    target[:, :3] = VOID
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target.clamp(max=4),
                       torch.randint(0, 5, target.shape, generator=g))
    target[0, 10, 10:20] = 4  # make sure a class is predicted but rare
    scores = confusion_scores(confusion_matrix(pred, target, 5))
    kw = dict(num_classes=5, ignore_index=VOID)
    assert scores["pixel_acc"] == pytest.approx(float(MulticlassAccuracy(average="micro", **kw)(pred, target)))
    assert scores["mean_class_acc"] == pytest.approx(float(MulticlassAccuracy(average="macro", **kw)(pred, target)))
    iou = MulticlassJaccardIndex(average="none", **kw)(pred, target)
    assert torch.allclose(scores["iou"].float(), iou, atol=1e-6)
    assert scores["miou"] == pytest.approx(float(iou.mean()), abs=1e-6)


def test_absent_classes_leave_the_means_alone() -> None:
    target = torch.tensor([[[0, 0, 1, 1]]])
    scores = confusion_scores(confusion_matrix(target, target, 4))
    assert scores["miou"] == 1.0 and scores["mean_class_acc"] == 1.0 and scores["pixel_acc"] == 1.0


def test_boundaries_are_the_inner_edge_and_void_makes_none() -> None:
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, 2:4, 2:4] = 1
    labels[0, :, 5] = VOID
    b = boundaries(labels)[0]
    assert (b == 1).sum() == 4  # the whole 2x2 square is its own edge
    assert (b == 0).sum() == 12  # the ring of 0s around it (8-neighbourhood)
    assert (b[:, 5] == -1).all()  # void holds no edge
    assert b[0, 4] == -1 and b[5, 4] == -1  # next to void only: no edge either


def reference_boundary_counts(pred: torch.Tensor, target: torch.Tensor, classes: int, tol: int) -> torch.Tensor:
    """Slow reference with scipy's chessboard distance transform, per image and class."""
    from scipy.ndimage import distance_transform_cdt

    pred = torch.where(target == VOID, VOID, pred)
    pb, tb = boundaries(pred).numpy(), boundaries(target).numpy()
    out = np.zeros((4, classes), dtype=np.int64)
    for i in range(len(pb)):
        for c in range(classes):
            p, t = pb[i] == c, tb[i] == c
            near_t = distance_transform_cdt(~t, metric="chessboard") <= tol if t.any() else np.zeros_like(t)
            near_p = distance_transform_cdt(~p, metric="chessboard") <= tol if p.any() else np.zeros_like(p)
            out[:, c] += [(p & near_t).sum(), p.sum(), (t & near_p).sum(), t.sum()]
    return torch.from_numpy(out)


def blobs(generator: torch.Generator, n: int = 3, classes: int = 4) -> torch.Tensor:
    coarse = torch.randint(0, classes, (n, 1, 5, 6), generator=generator).float()
    return F.interpolate(coarse, size=(31, 37), mode="nearest")[:, 0].long()


@pytest.mark.parametrize("tol", [0, 1, 2, 3])
def test_boundary_counts_match_a_distance_transform(tol: int) -> None:
    g = torch.Generator().manual_seed(tol)
    target, pred = blobs(g), blobs(g)
    target[:, :4, :] = VOID
    pred[0] = torch.where(target[0] == VOID, 0, target[0]).roll(1, dims=1)  # one near-perfect image
    assert torch.equal(boundary_counts(pred, target, 4, tol), reference_boundary_counts(pred, target, 4, tol))


def test_meter_scores_a_perfect_and_a_shifted_prediction() -> None:
    g = torch.Generator().manual_seed(1)
    target = blobs(g)
    meter = SegmentationMeter(["a", "b", "c", "d"], tolerance=2)
    meter.update(target, target)
    perfect = meter.compute()
    assert perfect["miou"] == 1.0 and perfect["boundary_f1"] == 1.0 and perfect["iou/c"] == 1.0
    shifted = SegmentationMeter(["a", "b", "c", "d"], tolerance=0)
    shifted.update(target.roll(3, dims=2), target)
    assert shifted.compute()["boundary_f1"] < 0.5


def test_median_frequency_weights() -> None:
    masks = torch.zeros(2, 2, 4, dtype=torch.uint8)
    masks[0, :, :2] = 1  # class 1: a quarter of the pixels, in one image
    masks[1, 0, 0] = VOID
    weights = median_frequency_weights(masks, 3)
    # freq(0) = 11/15 (both images hold 0; void left out), freq(1) = 4/8; class 2 never seen
    freq = torch.tensor([11 / 15, 4 / 8])
    median = freq.mean()  # of two values
    assert torch.allclose(weights, torch.tensor([median / freq[0], median / freq[1], 1.0]))


def test_colours_and_the_prediction_grid() -> None:
    labels = torch.tensor([[[0, 3], [VOID, 10]]])
    colours = colorize(labels, CAMVID_PALETTE)
    assert colours.dtype == torch.uint8 and colours.shape == (1, 3, 2, 2)
    assert colours[0, :, 0, 1].tolist() == list(CAMVID_PALETTE[3]) and colours[0, :, 1, 0].tolist() == [0, 0, 0]
    images = torch.randint(0, 255, (2, 3, 9, 11), dtype=torch.uint8)
    grid = prediction_grid(images, torch.zeros(2, 9, 11), torch.ones(2, 9, 11), CAMVID_PALETTE)
    assert grid.shape == (3, 2 + 2 * (9 + 2), 2 + 3 * (11 + 2))


# ---------------------------------------------------------------- data

def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def fake_camvid(root: Path, size: tuple[int, int] = (36, 48), per_split: int = 3, label: int = 3) -> Path:
    """A SegNet-layout tree: left half class `label`, right half void, a 2x2 block of class 10."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for i in range(per_split):
            mask = np.full(size, label, dtype=np.uint8)
            mask[:, size[1] // 2:] = 11
            mask[:2, :2] = 10
            write_png(root / "camvid" / f"{split}annot" / f"f{i}.png", mask)
            write_png(root / "camvid" / split / f"f{i}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return root


def test_camvid_is_read_resized_and_void_mapped(tmp_path: Path) -> None:
    root = fake_camvid(tmp_path / "data", size=(36, 48))
    data = load_camvid(str(root), size=(18, 30), cache_dir=str(tmp_path / "cache"))
    assert data.train.images.shape == (3, 3, 18, 30) and data.train.images.dtype == torch.uint8
    assert data.test.labels.shape == (3, 18, 30) and data.classes == CAMVID_CLASSES
    assert set(data.train.labels.unique().tolist()) <= {3, 10, VOID}  # nearest: no blended labels
    assert (data.train.labels[:, :, -1] == VOID).all() and (data.train.labels[:, 1:, 0] == 3).all()
    assert list((tmp_path / "cache").glob("camvid-*-18x30.pt"))
    again = load_camvid_tensors(root, (18, 30), tmp_path / "cache")
    assert torch.equal(again["val_y"], data.val.labels)


def test_camvid_subset_is_seeded_by_split_seed(tmp_path: Path) -> None:
    root = fake_camvid(tmp_path / "data", per_split=6)
    a = load_camvid(str(root), size=(36, 48), subset=3, split_seed=1, cache_dir=str(tmp_path / "cache"))
    b = load_camvid(str(root), size=(36, 48), subset=3, split_seed=1, cache_dir=str(tmp_path / "cache"))
    assert len(a.train) == 3 and torch.equal(a.train.images, b.train.images)


@pytest.mark.parametrize("damage,needle", [
    ("label", "holds labels [12]"),
    ("missing", "has no label image"),
    ("size", "but its labels"),
])
def test_bad_camvid_files_are_named(tmp_path: Path, damage: str, needle: str) -> None:
    root = fake_camvid(tmp_path / "data")
    annot = root / "camvid" / "valannot" / "f1.png"
    if damage == "label":
        write_png(annot, np.full((36, 48), 12, dtype=np.uint8))
    elif damage == "missing":
        annot.unlink()
    else:
        write_png(annot, np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ConfigError) as err:
        load_camvid(str(root), cache_dir=str(tmp_path / "cache"))
    assert err.value.key == "data.root" and needle in err.value.message


def test_missing_camvid_and_bad_size_say_how_to_fix_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trainannot") as err:
        load_camvid(str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert err.value.key == "data.root"
    with pytest.raises(ConfigError) as err:
        load_camvid(str(fake_camvid(tmp_path)), size=240, cache_dir=str(tmp_path / "cache"))
    assert err.value.key == "data.size"


def test_pets_never_downloads_and_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_pets(str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert err.value.key == "data.root" and "data.download=true" in err.value.message


def test_pets_reads_torchvisions_layout(tmp_path: Path) -> None:
    base = tmp_path / "oxford-iiit-pet"
    rng = np.random.default_rng(0)
    for split, names in (("trainval", ["cat_1", "cat_2", "dog_1"]), ("test", ["dog_2"])):
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("".join(f"{n} 1 1 1\n" for n in names))
        for name in names:
            write_png(base / "images" / f"{name}.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
            (base / "images" / f"{name}.png").rename(base / "images" / f"{name}.jpg")
            trimap = np.full((20, 30), 2, dtype=np.uint8)
            trimap[5:15, 5:20], trimap[5, 5:20] = 1, 3
            write_png(base / "annotations" / "trimaps" / f"{name}.png", trimap)
    data = load_pets(str(tmp_path), size=(10, 16), val_size=1, cache_dir=str(tmp_path / "cache"))
    assert (len(data.train), len(data.val), len(data.test)) == (2, 1, 1)
    assert set(data.test.labels.unique().tolist()) <= {0, 1, VOID} and (data.test.labels == 0).any()


def striped(n: int = 4, size: tuple[int, int] = (24, 32)) -> Split:
    """Images whose red channel says the class of each 8-pixel-wide column band."""
    labels = (torch.arange(size[1]) // 8).expand(n, *size).to(torch.uint8)
    images = torch.stack([labels * 60, torch.zeros_like(labels), torch.zeros_like(labels)], dim=1)
    return Split(images.to(torch.uint8), labels)


def test_flip_moves_image_and_mask_together() -> None:
    split = striped(8)
    loader = SegmentationLoader(split, 8, (0.0,) * 3, (1 / 255,) * 3, torch.device("cpu"), flip=True,
                                generator=torch.Generator().manual_seed(0))
    x, y = next(iter(loader))
    flipped = y[:, 0, 0] == 3
    assert 0 < flipped.sum() < 8
    assert torch.equal((x[:, 0] / 60).round().long(), y)


def test_scale_and_crop_keep_image_and_mask_aligned_and_void_outside() -> None:
    split = striped(16)
    loader = SegmentationLoader(split, 16, (0.0,) * 3, (1 / 255,) * 3, torch.device("cpu"), crop=(16, 20),
                                scale=(0.5, 1.5), flip=True, generator=torch.Generator().manual_seed(0))
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 16, 20) and y.shape == (16, 16, 20) and y.dtype == torch.int64
    inside = y != VOID
    agree = ((x[:, 0] / 60).round().long() == y)[inside].float().mean()
    assert agree > 0.9  # only pixels on a band edge may blend
    assert (~inside).any()  # zooming out shows void around the image


def test_without_augmentation_labels_pass_through() -> None:
    split = striped(3)
    loader = SegmentationLoader(split, 2, (0.0,) * 3, (1.0,) * 3, torch.device("cpu"))
    batches = list(loader)
    assert torch.equal(torch.cat([y for _, y in batches]), split.labels.long())


# ---------------------------------------------------------------- configs and CLI

def test_task_segmentation_switches_data_head_and_builds_a_segmenter() -> None:
    from sampler.experiments.train.model import make_model
    from sampler.experiments.tools.config import compose

    cfg = compose(["task=segmentation"])
    assert cfg["data"]["name"] == "camvid" and cfg["head"]["name"] == "decoder"
    model, spec = make_model(cfg)
    assert isinstance(model, Segmenter) and spec.num_classes == 11
    assert model(torch.zeros(1, 3, 45, 61)).shape == (1, 11, 45, 61)


@pytest.mark.parametrize("preset", ["upsample_modes", "head_style", "camvid_fast"])
def test_segmentation_presets_compose_and_build(preset: str) -> None:
    from sampler.experiments.train.model import make_model
    from sampler.experiments.tools.config import compose

    cfg = compose([f"experiment={preset}"])
    assert cfg["task"]["name"] == "segmentation"
    assert isinstance(make_model(cfg)[0], Segmenter)


def test_inspect_a_segmentation_head(cli) -> None:
    out = cli("inspect", "task=segmentation", "head.upsample=transposed", "data.root=/nonexistent", check=True).stdout
    assert "ConvTranspose2d" in out and "1x11x180x240" in out


@pytest.mark.parametrize("args,key,needle", [
    (["head.upsample=unpool", "model.pool=avg"], "head.upsample", "model.pool=max"),
    (["head.upsample=nearest", "head.align_corners=true"], "head.align_corners", "bilinear and bicubic"),
    (["head.style=oneshot", "head.upsample=unpool"], "head.upsample", "progressive"),
    (["head.upsample=sinc"], "head.upsample", "bicubic, bilinear, nearest, pixel_shuffle, transposed, unpool"),
    (["head=linear"], "head.name", "dense head"),
])
def test_segmentation_user_errors_exit_2(cli, args: list[str], key: str, needle: str) -> None:
    proc = cli("train", "task=segmentation", "data.root=/nonexistent", *args)
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr and needle in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("source", ["generated", pytest.param("shared", marks=pytest.mark.real_data("camvid"))])
def test_segmentation_end_to_end(cli, tmp_path: Path, source: str) -> None:  # source: the cli fixture's data_root
    cli("train", "task=segmentation", "data.subset=8", "trainer.epochs=1", "model.widths=[8,16]",
        "trainer.threads=1", "head.upsample=unpool", "head.skips=true", check=True)
    (run,) = run_dirs(tmp_path / "outputs")
    m = read_metrics(run)
    assert m["status"] == "completed" and m["task"] == "segmentation"
    for key in ("test/miou", "test/pixel_acc", "test/mean_class_acc", "test/boundary_f1", "val/miou_best",
                "test/iou/Sky", "test/iou/Bicyclist", "train/images_per_s", "memory/peak_mb"):
        assert 0 <= m[key] < float("inf"), key
    assert m["test/pixel_acc"] == pytest.approx(m["test/acc"])
    assert {"val/miou", "val/iou/Road"} <= set(m["history"][0])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    assert "val/prediction" in events.Tags()["images"]
    assert {"val/miou", "val/iou/Car", "test/miou", "test/boundary_f1", "test/iou/Sky"} <= set(events.Tags()["scalars"])
    # The HParams table leads with the task's headline, mIoU, then boundary F1 and pixel accuracy.
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    infos = plugin_data_pb2.HParamsPluginData.FromString(content).experiment.metric_infos
    tags = [info.name.tag for info in infos]
    assert tags[:2] == ["val/miou_best", "test/miou"] and {"test/boundary_f1", "test/pixel_acc"} <= set(tags)
    json.dumps(m)  # plain values only
