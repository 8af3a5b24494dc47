"""The one map of choices: each config key a user picks a registered name for, and the
registry that holds the names. `sampler ls` lists it, the HParams table takes its
discrete domains from it, and the registries' own errors list the valid names."""
from __future__ import annotations

from sampler.blocks import ACTS, HEAD_STYLES, HEADS, NORMS, POOLS, UPSAMPLERS, Registry

from ..data import DATASETS
from ..data.loaders import FLIPS
from .env import DEVICES, PRECISIONS
from .loop import TTA
from .optim import OPTIMIZERS, SCHEDULES
from .tasks import TASKS

CHOICES: dict[str, Registry] = {
    "model.pool": POOLS, "model.norm": NORMS, "model.act": ACTS,
    "head.name": HEADS, "head.style": HEAD_STYLES, "head.upsample": UPSAMPLERS,
    "optim.name": OPTIMIZERS, "sched.name": SCHEDULES,
    "data.name": DATASETS, "data.augment.flip": FLIPS, "task.name": TASKS,
    "trainer.device": DEVICES, "trainer.precision": PRECISIONS, "trainer.tta": TTA,
}


def domains() -> dict[str, list[str]]:
    """Every choice key with its valid names: the HParams table's discrete domains."""
    return {key: registry.names() for key, registry in CHOICES.items()}
