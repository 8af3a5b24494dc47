"""The generated data sets (tests/fakedata.py) are in the formats of the real ones, and
sampler's readers take them: the CLI tests that run on them stand for the real data."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import fakedata
from sampler.experiments.data.camvid import load_camvid_tensors
from sampler.experiments.data.cifar10 import CIFAR10_CLASSES, load_cifar10_tensors


def test_cifar10_jpeg_tree_is_an_image_folder_of_32x32_rgb_jpegs(fake_data: Path) -> None:
    for split, per_class in (("train", fakedata.CIFAR_TRAIN_PER_CLASS), ("test", fakedata.CIFAR_TEST_PER_CLASS)):
        folder = fake_data / "cifar10" / split
        assert sorted(p.name for p in folder.iterdir()) == list(CIFAR10_CLASSES)
        for name in CIFAR10_CLASSES:
            assert len(list((folder / name).glob("*.jpg"))) == per_class
        with Image.open(folder / "cat" / "0000.jpg") as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))


def test_cifar10_pickles_are_laid_out_and_pickled_like_the_official_ones(fake_cifar_pickles: Path) -> None:
    folder = fake_cifar_pickles / "cifar-10-batches-py"
    assert {"data_batch_1", "data_batch_5", "test_batch", "batches.meta"} <= {p.name for p in folder.iterdir()}
    assert not (fake_cifar_pickles / "cifar10").exists()
    with open(folder / "data_batch_1", "rb") as f:
        raw = f.read()
    assert raw[:2] == b"\x80\x02"  # protocol 2, as cPickle under Python 2 wrote them
    batch = pickle.loads(raw, encoding="bytes")  # Python 2 strings: bytes keys, as the official files give
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
    assert len(batch[b"labels"]) == len(batch[b"data"]) and isinstance(batch[b"labels"], list)
    assert pickle.loads(raw, encoding="latin1")["batch_label"] == "training batch 1 of 5"
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert meta["label_names"] == list(CIFAR10_CLASSES) and meta["num_vis"] == 3072


def test_both_cifar10_forms_hold_the_same_images(fake_data: Path, fake_cifar_pickles: Path, tmp_path: Path) -> None:
    tree = load_cifar10_tensors(fake_data, cache_dir=tmp_path)
    pickles = load_cifar10_tensors(fake_cifar_pickles, cache_dir=tmp_path)
    assert pickles["train_x"].shape == (10 * fakedata.CIFAR_TRAIN_PER_CLASS, 3, 32, 32)
    for split in ("train", "test"):
        # the tree is sorted by class, the batches are not: compare class by class, in order
        for c in range(10):
            a = tree[f"{split}_x"][tree[f"{split}_y"] == c].float()
            b = pickles[f"{split}_x"][pickles[f"{split}_y"] == c].float()
            assert a.shape == b.shape and (a - b).abs().mean() < 8, "JPEG is lossy, but not that lossy"


def test_camvid_is_segnets_layout_with_rgb_images_and_8_bit_labels(fake_data: Path) -> None:
    root = fake_data / "camvid"
    for split in fakedata.CAMVID_SPLITS:
        images = sorted(p.name for p in (root / split).iterdir())
        assert images == sorted(p.name for p in (root / f"{split}annot").iterdir())
        assert len(images) == fakedata.CAMVID_COUNTS[split]
        for name in images:
            with Image.open(root / split / name) as image, Image.open(root / f"{split}annot" / name) as labels:
                assert (image.format, image.mode, image.size) == ("PNG", "RGB", (240, 180))
                assert (labels.format, labels.mode, labels.size) == ("PNG", "L", (240, 180))
                values = set(np.unique(np.asarray(labels)).tolist())
            assert values == set(range(12)), f"{split}/{name}: every class and void in every image"


def test_camvid_is_read_and_void_mapped(fake_data: Path, tmp_path: Path) -> None:
    t = load_camvid_tensors(fake_data, (180, 240), cache_dir=tmp_path)
    assert t["train_x"].shape == (fakedata.CAMVID_COUNTS["train"], 3, 180, 240)
    assert set(t["val_y"].unique().tolist()) == set(range(11)) | {255}  # 11 (void) becomes VOID


def test_the_classes_are_told_apart_by_their_colours() -> None:
    # learnable: a nearest-mean classifier on the mean colour is far above chance (10%)
    train_x, train_y = fakedata.cifar_images(20, seed=5)
    test_x, test_y = fakedata.cifar_images(10, seed=6)
    means = torch.stack([torch.from_numpy(train_x[train_y == c]).float().mean((0, 2, 3)) for c in range(10)])
    colours = torch.from_numpy(test_x).float().mean((2, 3))
    predicted = torch.cdist(colours, means).argmin(1).numpy()
    assert (predicted == test_y).mean() > 0.8
