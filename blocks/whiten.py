"""airbench's patch-whitening first conv: a small conv whose filters are the eigenvectors
of the training images' patch covariance, each scaled by 1/sqrt(eigenvalue + eps), and
each with its negative (so the activation after it keeps both signs). Its weight is
frozen; it is set from data, so the model is built first and `fit_whitening` is called
once the training images are in memory (the runner does it before building the optimizer).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from .registry import ConfigError, is_int, is_number

WHITEN_DEFAULTS = {"kernel_size": 2, "eps": 5e-4, "width": None, "bias": True}
FIT_IMAGES = 5000  # airbench fits to 5,000 training images: the 12x12 covariance is settled by then


class PatchWhitening(nn.Conv2d):
    """A `kernel_size` conv without padding, its weight frozen and filled by `fit`.
    `out_channels` is even: the top `out_channels // 2` eigenvectors, then their negatives."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, eps: float, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, padding=0, bias=bias)
        self.eps = eps
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def fit(self, images: Tensor, chunk: int = 500) -> None:
        """Set the filters from `images` (N, C, H, W), normalised as the model sees them.
        The covariance is uncentred, as airbench's (normalised images have zero mean)."""
        c, (kh, kw) = self.in_channels, self.kernel_size
        dim = c * kh * kw
        cov = torch.zeros(dim, dim, dtype=torch.float64, device=images.device)
        count = 0
        for batch in images.split(chunk):
            patches = batch.float().unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
            # one row per tap (C*kh*kw, N*H'*W'): A @ A.T ran 2.5x faster than the (N, dim)
            # transpose product on a Zen 4 (0.28 vs 0.72 s for 5,000 CIFAR images) and gave the
            # same fp64 sums, so the same filters to the bit. Keep chunk: another changes them.
            rows = patches.permute(1, 4, 5, 0, 2, 3).reshape(dim, -1).double()
            cov += rows @ rows.T
            count += rows.shape[1]
        eigenvalues, eigenvectors = torch.linalg.eigh(cov / count)  # ascending
        top = self.out_channels // 2
        eigenvalues, eigenvectors = eigenvalues.flip(0)[:top], eigenvectors.T.flip(0)[:top]
        filters = (eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + self.eps)[:, None]).view(top, c, kh, kw)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", eps={self.eps}, frozen"


def whiten_args(in_channels: int, args: dict[str, Any] | None) -> dict[str, Any]:
    """`model.whiten_args` completed and checked; `width` None becomes 2 * C * k * k (every
    eigenvector and its negative, airbench's 24 for RGB and k=2)."""
    unknown = sorted(set(args or {}) - set(WHITEN_DEFAULTS))
    if unknown:
        raise ConfigError(f"whiten_args.{unknown[0]}", f"not a whitening argument; choose from: "
                          f"{', '.join(sorted(WHITEN_DEFAULTS))}")
    out = {**WHITEN_DEFAULTS, **(args or {})}
    k = out["kernel_size"]
    if not is_int(k) or k < 1:
        raise ConfigError("whiten_args.kernel_size", f"{k!r} must be a positive integer (airbench: 2)")
    eps = out["eps"]
    if not is_number(eps) or eps <= 0:
        raise ConfigError("whiten_args.eps", f"{eps!r} must be a number > 0 (airbench: 5e-4)")
    most = 2 * in_channels * k * k
    width = most if out["width"] is None else out["width"]
    if not is_int(width) or width < 2 or width % 2 or width > most:
        raise ConfigError("whiten_args.width", f"{out['width']!r} must be null (all: {most}) or an even number "
                          f"from 2 to {most} (2 x {in_channels} channels x {k}x{k} taps)")
    if not isinstance(out["bias"], bool):
        raise ConfigError("whiten_args.bias", f"{out['bias']!r} must be true or false")
    return {**out, "width": width}


def fit_whitening(model: nn.Module, sample: Callable[[int], Tensor]) -> int:
    """Fit every `PatchWhitening` in `model` to `sample(FIT_IMAGES)`, training images
    normalised as the model sees them; how many layers there were (0 without
    model.whiten: then no image is asked for)."""
    layers = [m for m in model.modules() if isinstance(m, PatchWhitening)]
    if layers:
        images = sample(FIT_IMAGES)
        for layer in layers:
            layer.fit(images.to(layer.weight.device))
    return len(layers)
