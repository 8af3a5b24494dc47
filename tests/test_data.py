"""Data: the readers, the cache, the splits and the batch augmentation."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from sampler.experiments.data import Split, TensorLoader
from sampler.experiments.data.cifar10 import CIFAR10_CLASSES, load_cifar10, load_cifar10_tensors
from sampler.experiments.data.splits import balanced_indices, split_test, split_train
from sampler.experiments.errors import ConfigError


def write_pickles(root: Path, n_train: int = 100, n_test: int = 20, seed: int = 0) -> Path:
    """A small fake of the official cifar-10-batches-py folder."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else n_train // 5
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": [int(x) for x in np.arange(n) % 10]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def write_jpeg_tree(root: Path, per_class: int = 2) -> Path:
    folder = root / "cifar10"
    for split in ("train", "test"):
        for c in CIFAR10_CLASSES:
            (folder / split / c).mkdir(parents=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
                (folder / split / c / f"{i:04d}.jpg").write_bytes(bytes(encode_jpeg(img).numpy()))
    return folder


def test_pickles_are_read_and_cached_outside_the_source(tmp_path: Path) -> None:
    write_pickles(tmp_path / "data")
    cache = tmp_path / "cache"
    t = load_cifar10_tensors(tmp_path / "data", cache_dir=cache)
    assert t["train_x"].shape == (100, 3, 32, 32) and t["train_x"].dtype == torch.uint8
    assert t["test_y"].tolist() == [i % 10 for i in range(20)]
    assert len(list(cache.glob("cifar10-pickle-*.pt"))) == 1
    assert not list((tmp_path / "data").rglob("*.pt"))
    # the cached copy is what a second load returns
    again = load_cifar10_tensors(tmp_path / "data", cache_dir=cache)
    assert torch.equal(again["train_x"], t["train_x"])


@pytest.mark.parametrize("damage,needle", [
    (lambda t: t["train_y"].__setitem__(3, 12), "train_y holds label 12, outside 0-9"),
    (lambda t: t.__setitem__("test_y", t["test_y"][:-1]), "test_y is torch.int64 of shape (19,)"),
    (lambda t: t.__setitem__("train_x", t["train_x"].float()), "train_x is torch.float32"),
    (lambda t: t.pop("test_x"), "test lacks its images"),
    (None, "cannot be read"),
])
def test_a_damaged_cache_is_rebuilt_with_one_warning_naming_it(tmp_path: Path, caplog, damage, needle: str) -> None:
    write_pickles(tmp_path / "data")
    cache = tmp_path / "cache"
    good = load_cifar10_tensors(tmp_path / "data", cache_dir=cache)
    (file,) = cache.glob("cifar10-pickle-*.pt")
    if damage is None:
        file.write_bytes(b"not a tensor file")
    else:
        tensors = torch.load(file, weights_only=True)
        damage(tensors)
        torch.save(tensors, file)
    again = load_cifar10_tensors(tmp_path / "data", cache_dir=cache)
    assert all(torch.equal(again[k], good[k]) for k in good)  # decoded afresh, not the damaged copy
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(file) in warning and needle in warning, warning
    caplog.clear()
    load_cifar10_tensors(tmp_path / "data", cache_dir=cache)  # the rebuilt file loads quietly
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_cached_masks_may_hold_void_but_no_other_label_beyond_the_classes() -> None:
    from sampler.experiments.data.cache import check_tensors

    x = torch.zeros(2, 3, 4, 5, dtype=torch.uint8)
    y = torch.full((2, 4, 5), 255, dtype=torch.uint8)
    y[0, 0, 0] = 10
    assert check_tensors({"train_x": x, "train_y": y}, num_classes=11) is None
    y[1, 1, 1] = 11
    assert "label 11, outside 0-10 and 255 (void)" in check_tensors({"train_x": x, "train_y": y}, num_classes=11)
    assert "not integer labels or masks" in check_tensors({"train_x": x, "train_y": y[:, :3]}, num_classes=12)
    labels = torch.tensor([0, 1])
    assert "differ in size" in check_tensors({"a_x": x, "a_y": labels, "b_x": x[:, :, :3], "b_y": labels},
                                             num_classes=2)


def test_a_changed_source_is_read_again(tmp_path: Path) -> None:
    write_pickles(tmp_path / "data", seed=0)
    cache = tmp_path / "cache"
    first = load_cifar10_tensors(tmp_path / "data", cache_dir=cache)
    for f in (tmp_path / "data" / "cifar-10-batches-py").iterdir():
        f.unlink()
    (tmp_path / "data" / "cifar-10-batches-py").rmdir()
    write_pickles(tmp_path / "data", seed=1)
    second = load_cifar10_tensors(tmp_path / "data", cache_dir=cache)
    assert not torch.equal(first["train_x"], second["train_x"])


def odd_tree(root: Path) -> list[Path]:
    """Folders and files with names a fingerprint must not trip on; the entries to fingerprint."""
    for rel in ("a/x.jpg", "a/b c/y:1.jpg", "a-b", "é/ünï code.png", "a/new\nline.jpg", "top.bin"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode() * 3)
    (root / "a" / "link.jpg").symlink_to(root / "top.bin")
    return sorted(root.iterdir())


def test_the_fingerprint_a_child_process_computes_is_this_processs(tmp_path: Path, monkeypatch) -> None:
    from sampler.experiments.data import fingerprint

    entries = odd_tree(tmp_path)
    here = fingerprint.source_key("folder", tmp_path, entries)
    fingerprint.start("folder", tmp_path, reversed(entries))  # the order of the entries does not matter
    assert len(fingerprint._PENDING) == 1
    monkeypatch.setattr(fingerprint, "_source_key", lambda *a: pytest.fail("computed here, not by the child"))
    assert fingerprint.source_key("folder", tmp_path, entries) == here
    assert not fingerprint._PENDING
    (tmp_path / "a" / "x.jpg").write_bytes(b"edited in place")  # size and mtime change: another key
    monkeypatch.undo()
    fingerprint.start("folder", tmp_path, entries)
    assert fingerprint.source_key("folder", tmp_path, entries) != here


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/echo", "/bin/false"])
def test_without_a_childs_answer_the_fingerprint_is_computed_here(tmp_path: Path, monkeypatch, executable) -> None:
    # No child (it cannot start), one that prints no key, one that fails: the same key, computed here.
    from sampler.experiments.data import fingerprint

    entries = odd_tree(tmp_path)
    here = fingerprint.source_key("folder", tmp_path, entries)
    monkeypatch.setattr(fingerprint.sys, "executable", executable)
    fingerprint.start("folder", tmp_path, entries)
    assert len(fingerprint._PENDING) == (executable != "/nonexistent/python")
    assert fingerprint.source_key("folder", tmp_path, entries) == here
    assert not fingerprint._PENDING


def test_warm_starts_the_fingerprint_that_the_load_then_takes(tmp_path: Path, monkeypatch) -> None:
    from sampler.experiments.data import DATASETS, fingerprint

    write_jpeg_tree(tmp_path / "data", per_class=1)
    DATASETS.get("cifar10").warm(root=str(tmp_path / "data"), subset=None)
    assert len(fingerprint._PENDING) == 1
    load_cifar10_tensors(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert not fingerprint._PENDING, "the load took the child's answer"
    DATASETS.get("cifar10").warm(root=str(tmp_path / "no-data-here"))  # nothing to start, nothing raised
    assert not fingerprint._PENDING


def test_image_folder_tree_is_read_with_official_label_order(tmp_path: Path) -> None:
    write_jpeg_tree(tmp_path)
    t = load_cifar10_tensors(tmp_path, cache_dir=tmp_path / "cache")
    assert t["train_x"].shape == (20, 3, 32, 32)
    assert t["train_y"].tolist() == [c for c in range(10) for _ in range(2)]


def test_a_corrupt_image_names_the_file(tmp_path: Path) -> None:
    folder = write_jpeg_tree(tmp_path)
    bad = folder / "train" / "cat" / "0001.jpg"
    bad.write_bytes(b"\xff\xd8not really a jpeg")
    with pytest.raises(ConfigError) as err:
        load_cifar10_tensors(tmp_path, cache_dir=tmp_path / "cache")
    assert err.value.key == "data.root" and str(bad) in err.value.message


def test_missing_data_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_cifar10_tensors(tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    assert err.value.key == "data.root"
    assert "data.download=auto" in err.value.message and "data.root=" in err.value.message


def test_val_split_and_subset_are_balanced_disjoint_and_seeded(tmp_path: Path) -> None:
    labels = torch.arange(1000) % 10
    train = Split(torch.arange(1000).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.int64), labels)
    tr, val = split_train(train, val_size=100, subset=200, num_classes=10, split_seed=0)
    tr2, val2 = split_train(train, val_size=100, subset=200, num_classes=10, split_seed=0)
    ids, val_ids = set(tr.images[:, 0, 0, 0].tolist()), set(val.images[:, 0, 0, 0].tolist())
    assert len(ids) == 200 and len(val_ids) == 100 and not ids & val_ids
    assert torch.bincount(tr.labels).tolist() == [20] * 10 and torch.bincount(val.labels).tolist() == [10] * 10
    assert torch.equal(tr.images, tr2.images) and torch.equal(val.images, val2.images)
    other, _ = split_train(train, val_size=100, subset=200, num_classes=10, split_seed=1)
    assert not torch.equal(other.images, tr.images)


@pytest.mark.parametrize("kwargs,key", [(dict(val_size=15, subset=None), "data.val_size"),
                                        (dict(val_size=100, subset=5), "data.subset"),
                                        (dict(val_size=100, subset=15), "data.subset"),  # 10 then, silently
                                        (dict(val_size=100, subset=10_000), "data.subset")])
def test_bad_split_sizes_name_the_key(kwargs: dict, key: str) -> None:
    train = Split(torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), torch.arange(1000) % 10)
    with pytest.raises(ConfigError) as err:
        split_train(train, num_classes=10, split_seed=0, **kwargs)
    assert err.value.key == key


def test_test_subset_is_balanced_seeded_and_null_keeps_all() -> None:
    labels = torch.arange(1000) % 10
    test = Split(torch.arange(1000).view(-1, 1, 1, 1), labels)
    assert split_test(test, None, 0, num_classes=10) is test
    a, b = (split_test(test, 100, 0, num_classes=10) for _ in range(2))
    assert len(a) == 100 and torch.bincount(a.labels).tolist() == [10] * 10 and torch.equal(a.images, b.images)
    assert not torch.equal(split_test(test, 100, 1, num_classes=10).images, a.images)
    assert torch.equal(split_test(test, 1000, 0, num_classes=10).images, test.images)  # all, in order
    uniform = split_test(test, 7, 0)  # segmentation: no classes, any count
    assert len(uniform) == 7 and len(set(uniform.images.flatten().tolist())) == 7


@pytest.mark.parametrize("size", [15, 0, 1010, 2.5, True, "100"])
def test_bad_test_sizes_name_the_key(size: object) -> None:
    test = Split(torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), torch.arange(1000) % 10)
    with pytest.raises(ConfigError) as err:
        split_test(test, size, 0, num_classes=10)  # type: ignore[arg-type]
    assert err.value.key == "data.test_size" and "1000 test images" in err.value.message


def test_a_test_size_an_unbalanced_set_cannot_fill_is_refused() -> None:
    test = Split(torch.zeros(30, 1, 1, 1), torch.tensor([0] * 25 + [1] * 5))
    assert torch.bincount(split_test(test, 10, 0, num_classes=2).labels).tolist() == [5, 5]
    with pytest.raises(ConfigError, match="some class has fewer"):
        split_test(test, 20, 0, num_classes=2)


def test_balanced_indices_take_per_class() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30)
    chosen, rest = balanced_indices(labels, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[chosen]).tolist() == [10, 10] and len(rest) == 60


def loader(images: torch.Tensor, **kwargs) -> TensorLoader:
    split = Split(images, torch.zeros(len(images), dtype=torch.int64))
    return TensorLoader(split, len(images), (0.0,) * images.shape[1], (1 / 255,) * images.shape[1],
                        torch.device("cpu"), generator=torch.Generator().manual_seed(0), **kwargs)


def test_loader_without_augmentation_only_normalises() -> None:
    images = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    (x, _), = list(loader(images))
    assert torch.equal(x, images.float())  # mean 0, std 1/255 on the 0-1 scale: identity


def test_random_crop_is_a_window_of_the_reflect_padded_image() -> None:
    images = torch.randint(0, 256, (16, 3, 6, 6), dtype=torch.uint8)
    (x, _), = list(loader(images, crop_padding=2))
    padded = torch.nn.functional.pad(images.float(), (2, 2, 2, 2), mode="reflect")
    for i in range(16):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(x[i], w) for w in windows)
    assert not torch.equal(x, images.float())  # 16 images all at offset (2, 2) is vanishingly unlikely


@pytest.mark.parametrize("overrides,key,needle", [
    (["data.augment.crop_padding=32"], "data.augment.crop_padding", "to 31: the reflect padding of a 32x32"),
    (["data.augment.crop_padding=100"], "data.augment.crop_padding", "to 31"),
    (["data.augment.crop_padding=2.5"], "data.augment.crop_padding", "whole number"),
    (["task=segmentation", "data.augment.crop=[0,0]"], "data.augment.crop", "whole pixels > 0"),
    (["task=segmentation", "data.augment.crop=[90.5,120]"], "data.augment.crop", "whole pixels > 0"),
    (["task=segmentation", "data.augment.crop=90"], "data.augment.crop", "[height, width]"),
    (["task=segmentation", "data.augment.scale=[0,1]"], "data.augment.scale", "> 0"),
    (["task=segmentation", "data.augment.scale=[1.25,0.75]"], "data.augment.scale", "min <= max"),
])
def test_augmentation_the_loader_cannot_do_is_refused_before_the_data(overrides: list[str], key: str,
                                                                       needle: str) -> None:
    from sampler.experiments.tools.config import compose
    from sampler.experiments.train.runner import check_config

    with pytest.raises(ConfigError) as err:
        check_config(compose(overrides))
    assert err.value.key == key and needle in err.value.message


def test_the_largest_padding_the_check_allows_is_one_the_loader_does() -> None:
    from sampler.experiments.tools.config import compose
    from sampler.experiments.train.runner import check_config

    check_config(compose(["data.augment.crop_padding=31"]))
    check_config(compose(["task=segmentation", "data.augment.crop=[64,96]", "data.augment.scale=[0.5,2]"]))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    (x, _), = list(loader(images, crop_padding=31))
    assert x.shape == images.shape


def test_flip_mirrors_some_images_and_is_seeded() -> None:
    images = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8)
    (x, _), = list(loader(images, flip=True))
    flipped = [torch.equal(x[i], images[i].float().flip(2)) for i in range(64)]
    same = [torch.equal(x[i], images[i].float()) for i in range(64)]
    assert all(f or s for f, s in zip(flipped, same)) and 10 < sum(flipped) < 54
    (x2, _), = list(loader(images, flip=True))
    assert torch.equal(x, x2)


def test_shuffled_batches_cover_the_set_once_per_epoch() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    batches = loader(images, shuffle=True)
    batches.batch_size = 3
    seen = torch.cat([x.flatten() for x, _ in batches])
    assert sorted(seen.tolist()) == list(range(10)) and len(batches) == 4
    batches.drop_last = True
    assert len(batches) == 3 and sum(len(x) for x, _ in batches) == 9


def test_load_cifar10_computes_normalisation_from_train(tmp_path: Path) -> None:
    write_pickles(tmp_path, n_train=200)
    data = load_cifar10(str(tmp_path), val_size=20, cache_dir=str(tmp_path / "cache"))
    assert len(data.train) == 180 and len(data.val) == 20 and len(data.test) == 20
    small = load_cifar10(str(tmp_path), val_size=20, test_size=10, cache_dir=str(tmp_path / "cache"))
    assert len(small.test) == 10 and torch.bincount(small.test.labels).tolist() == [1] * 10
    assert torch.equal(small.train.images, data.train.images)  # test_size leaves the training draw alone
    pixels = data.train.images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert data.mean == pytest.approx(pixels.mean(1).tolist(), abs=1e-9)
    assert data.std == pytest.approx(pixels.std(1).tolist(), abs=1e-9)


def test_camvid_test_size_is_a_seeded_uniform_choice(tmp_path: Path) -> None:
    import fakedata
    from sampler.experiments.data.camvid import load_camvid

    fakedata.write_camvid(tmp_path, counts={"train": 2, "val": 1, "test": 4}, size=(45, 60))
    full = load_camvid(str(tmp_path), size=(45, 60), cache_dir=str(tmp_path / "cache"))
    a, b = (load_camvid(str(tmp_path), size=(45, 60), test_size=3, cache_dir=str(tmp_path / "cache")) for _ in range(2))
    assert len(full.test) == 4 and len(a.test) == 3 and torch.equal(a.test.images, b.test.images)
    assert all(any(torch.equal(x, y) for y in full.test.images) for x in a.test.images)
    with pytest.raises(ConfigError) as err:
        load_camvid(str(tmp_path), size=(45, 60), test_size=5, cache_dir=str(tmp_path / "cache"))
    assert err.value.key == "data.test_size" and "the 4 test images" in err.value.message
