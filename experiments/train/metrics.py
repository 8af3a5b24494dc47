"""Segmentation scores and pictures: confusion-matrix metrics, boundary F1, colour grids.

All scores ignore void pixels (label VOID). Pixel accuracy, mean class accuracy
(SegNet's "class average") and IoU come from one confusion matrix summed over a
split, checked in the tests against torchmetrics; boundary F1 (Csurka et al.
2013) counts, per class, boundary pixels of the prediction that lie within
`tolerance` pixels of a true boundary (precision) and the other way round
(recall), pooled over the split.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import VOID


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """num_classes x num_classes counts, rows the true class, columns the predicted one."""
    n2 = num_classes ** 2
    index = torch.where(target != VOID, target.long() * num_classes + pred.long(), n2)  # void: a spare bin
    return torch.bincount(index.flatten(), minlength=n2 + 1)[:n2].view(num_classes, num_classes)


def confusion_scores(confusion: Tensor) -> dict[str, Tensor | float]:
    """Pixel accuracy, mean class accuracy, per-class IoU and their mean (nan-free:
    classes absent from both truth and prediction are left out of the means)."""
    c = confusion.double()
    true, predicted, hit = c.sum(1), c.sum(0), c.diag()
    union = true + predicted - hit
    iou = hit / union.clamp(min=1)
    present = true > 0
    return {"pixel_acc": float(hit.sum() / c.sum().clamp(min=1)),
            "mean_class_acc": float((hit / true.clamp(min=1))[present].mean()) if present.any() else 0.0,
            "miou": float(iou[union > 0].mean()) if (union > 0).any() else 0.0,
            "iou": iou}


def boundaries(labels: Tensor) -> Tensor:
    """The label of every boundary pixel, -1 elsewhere. A pixel of class c is on c's
    boundary when one of its 8 neighbours holds another class. Void neither makes nor
    holds a boundary: nobody knows where the edge runs inside it."""
    x = labels[:, None].float()
    void = x == VOID
    highest = F.max_pool2d(x.masked_fill(void, -1), 3, stride=1, padding=1)  # pooling pads with -inf
    lowest = -F.max_pool2d(-x.masked_fill(void, VOID + 1), 3, stride=1, padding=1)
    edge = ((highest != x) | (lowest != x)) & ~void
    return torch.where(edge, labels[:, None].long(), -1)[:, 0]


def _matches(edges: Tensor, other: Tensor, tolerance: int, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per class: boundary pixels of `edges` with a boundary pixel of the same class in
    `other` within `tolerance` pixels (chessboard distance), and all of them."""
    n, h, w = edges.shape
    padded = F.pad(other, (tolerance,) * 4, value=-1)
    width = w + 2 * tolerance
    b, y, x = (edges >= 0).nonzero(as_tuple=True)
    cls = edges[b, y, x]
    span = torch.arange(2 * tolerance + 1, device=edges.device)
    window = (span[:, None] * width + span[None, :]).flatten()  # the (2t+1)^2 offsets, as flat indices
    near = padded.flatten()[((b * (h + 2 * tolerance) + y) * width + x)[:, None] + window]
    hit = (near == cls[:, None]).any(1)
    return (torch.bincount(cls[hit], minlength=num_classes)[:num_classes],
            torch.bincount(cls, minlength=num_classes)[:num_classes])


def boundary_counts(pred: Tensor, target: Tensor, num_classes: int, tolerance: int) -> Tensor:
    """4 x C counts: matched predicted boundary, predicted boundary, matched true boundary,
    true boundary. The prediction is read only where the truth is not void."""
    pb = boundaries(torch.where(target == VOID, VOID, pred))
    tb = boundaries(target)
    return torch.stack([*_matches(pb, tb, tolerance, num_classes), *_matches(tb, pb, tolerance, num_classes)])


def boundary_f1(counts: Tensor) -> float:
    """Mean over classes with a true boundary of the per-class boundary F1."""
    matched_pred, pred, matched_true, true = counts.double()
    precision = matched_pred / pred.clamp(min=1)
    recall = matched_true / true.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = true > 0
    return float(f1[present].mean()) if present.any() else 0.0


class SegmentationMeter:
    """Accumulates a split's confusion matrix and boundary counts, batch by batch."""

    def __init__(self, classes: Sequence[str], tolerance: int = 2):
        self.classes = tuple(classes)
        self.tolerance = tolerance
        n = len(self.classes)
        self.confusion = torch.zeros(n, n, dtype=torch.int64)
        self.boundary = torch.zeros(4, n, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        n = len(self.classes)
        self.confusion += confusion_matrix(pred, target, n).cpu()
        self.boundary += boundary_counts(pred, target, n, self.tolerance).cpu()

    def compute(self) -> dict[str, float]:
        scores = confusion_scores(self.confusion)
        out = {k: v for k, v in scores.items() if k != "iou"}
        out["boundary_f1"] = boundary_f1(self.boundary)
        out.update({f"iou/{name}": float(v) for name, v in zip(self.classes, scores["iou"])})
        return out


def median_frequency_weights(masks: Tensor, num_classes: int) -> Tensor:
    """SegNet's median frequency balancing: freq(c) = pixels of c / pixels of the images
    that hold c; weight(c) = median(freq) / freq(c). Classes never seen get weight 1."""
    counts = torch.stack([torch.bincount(m[m != VOID].long(), minlength=num_classes)[:num_classes]
                          for m in masks]).double()
    image_pixels = (masks != VOID).flatten(1).sum(1, keepdim=True).double()
    seen = counts > 0
    freq = counts.sum(0) / (image_pixels * seen).sum(0).clamp(min=1)
    weights = torch.ones(num_classes, dtype=torch.float64)
    present = seen.any(0)
    weights[present] = freq[present].quantile(0.5) / freq[present]  # numpy's median (torch's takes the lower)
    return weights.float()


def colorize(labels: Tensor, palette: Sequence[Sequence[int]]) -> Tensor:
    """N x H x W labels as N x 3 x H x W uint8 colours; void is black."""
    lut = torch.zeros(256, 3, dtype=torch.uint8)
    lut[:len(palette)] = torch.tensor(palette, dtype=torch.uint8)
    return lut[labels.long().cpu()].permute(0, 3, 1, 2)


def prediction_grid(images: Tensor, truth: Tensor, pred: Tensor, palette: Sequence[Sequence[int]]) -> Tensor:
    """One row per image: input | ground truth | prediction, as a 3 x H x W uint8 picture."""
    from torchvision.utils import make_grid

    panels = torch.stack([images.cpu(), colorize(truth, palette), colorize(pred, palette)], dim=1)
    return make_grid(panels.flatten(0, 1), nrow=3, padding=2, pad_value=255)
