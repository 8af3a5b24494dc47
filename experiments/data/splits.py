"""The one way a training split is divided: a validation hold-out, then a subset; and
the one way a test split is shrunk (`split_test`).

All draw from one generator seeded with `split_seed`, not the run's seed: every
variant and every seed of a sweep sees the same images, so differences come from
the model, not the data. With `num_classes` the draws are class-balanced (one
label per image); without it they are uniform (segmentation masks).
"""
from __future__ import annotations

import torch
from torch import Tensor

from sampler.blocks.registry import is_int

from ..errors import ConfigError
from .base import Split


def balanced_indices(labels: Tensor, per_class: int | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A seeded, class-balanced choice of `per_class` indices per class, and the rest."""
    chosen, rest = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        k = len(idx) if per_class is None else per_class
        chosen.append(idx[:k])
        rest.append(idx[k:])
    return torch.cat(chosen).sort().values, torch.cat(rest).sort().values


def _choose(size: int, n: int, generator: torch.Generator, labels: Tensor | None = None,
            num_classes: int | None = None) -> tuple[Tensor, Tensor]:
    """Sorted indices of `n` of `size` items, and of the rest: class-balanced over `labels`
    (one per item) when `num_classes` is given, uniform otherwise."""
    if num_classes:
        assert labels is not None
        return balanced_indices(labels, n // num_classes, generator)
    order = torch.randperm(size, generator=generator)
    return order[:n].sort().values, order[n:].sort().values


def split_train(train: Split, val_size: int, subset: int | None, split_seed: int,
                num_classes: int | None = None) -> tuple[Split, Split | None]:
    """Hold out `val_size` images for validation (0: none), then keep `subset` of the
    rest for training (None: all); class-balanced when `num_classes` is given.

    Indices are chosen first and the images copied once: the images a draw leaves out
    (most of the training set with a small subset) are never copied."""
    g = torch.Generator().manual_seed(split_seed)
    step = num_classes or 1
    val, keep = None, None  # keep: the indices of `train` still in the training split (None: all)
    if val_size:
        if not is_int(val_size) or val_size % step or not 0 < val_size < len(train):
            whole = f"a multiple of the {num_classes} classes and " if num_classes else ""
            raise ConfigError("data.val_size", f"{val_size!r} must be {whole}smaller than the {len(train)} "
                              "training images (0 turns validation off)")
        chosen, keep = _choose(len(train), val_size, g, train.labels, num_classes)
        val = train.take(chosen)
    if subset is not None:
        left = len(train) if keep is None else len(keep)
        if not is_int(subset) or subset % step or not step <= subset <= left:
            after = " left after the validation split" if val is not None else ""
            whole = f"a multiple of the {num_classes} classes " if num_classes else ""
            raise ConfigError("data.subset", f"{subset!r} must be {whole}between {step} and the {left} "
                              f"training images{after} (null uses all)")
        labels = None if not num_classes else train.labels if keep is None else train.labels[keep]
        chosen, _ = _choose(left, subset, g, labels, num_classes)
        keep = chosen if keep is None else keep[chosen]
    return (train if keep is None else train.take(keep)), val


def split_test(test: Split, test_size: int | None, split_seed: int, num_classes: int | None = None) -> Split:
    """`test_size` images of the test split (None: all), drawn like `split_train`'s:
    seeded with `split_seed` and class-balanced when `num_classes` is given."""
    if test_size is None:
        return test
    step = num_classes or 1
    if not is_int(test_size) or test_size % step or not step <= test_size <= len(test):
        whole = f"a multiple of the {num_classes} classes " if num_classes else ""
        raise ConfigError("data.test_size", f"{test_size!r} must be {whole}between {step} and the {len(test)} "
                          "test images (null uses all)")
    chosen, _ = _choose(len(test), test_size, torch.Generator().manual_seed(split_seed), test.labels, num_classes)
    if len(chosen) < test_size:
        raise ConfigError("data.test_size", f"{test_size} needs {test_size // step} test images of every class, "
                          f"but some class has fewer; at most {len(chosen)} fit (null uses all)")
    return test.take(chosen)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0-1 scale, exact, from a 256-bin histogram of
    the uint8 values: a float copy of the training set costs seconds at start-up."""
    hist = torch.stack([torch.bincount(images[:, c].flatten(), minlength=256)
                        for c in range(images.shape[1])]).double()
    value = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum(1)
    mean = (hist * value).sum(1) / n
    var = ((hist * value * value).sum(1) - n * mean * mean) / (n - 1)
    return tuple(mean.tolist()), tuple(var.clamp_min(0).sqrt().tolist())
