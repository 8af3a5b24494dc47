"""`sampler ls` (every choice and preset) and `sampler data` (the data a config points at)."""
from __future__ import annotations

from importlib import resources
from typing import Sequence

from rich.console import Console
from rich.table import Table
from torch import Tensor

from sampler.blocks.registry import call_with_accepted

from ..data import DATASETS, VOID, cache_root
from ..train.choices import CHOICES
from .config import check_override_keys, compose


def experiment_presets() -> list[str]:
    folder = resources.files("sampler.configs") / "experiment"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def print_registries() -> None:
    table = Table(title="choices (override with KEY=NAME)")
    for col in ("key", "name", "what it is"):
        table.add_column(col)
    for key, registry in CHOICES.items():
        for i, name in enumerate(registry.names()):
            table.add_row(key if i == 0 else "", name, registry.describe(name))
        table.add_section()
    for i, name in enumerate(experiment_presets()):
        table.add_row("experiment" if i == 0 else "", name, "configs/experiment preset")
    Console().print(table)


def print_data_summary(overrides: Sequence[str]) -> None:
    check_override_keys(overrides)  # a misspelt key or group option: one paragraph, not Hydra's
    cfg = compose(overrides)
    data = call_with_accepted(DATASETS.get(cfg["data"]["name"], "data.name").load, cfg["data"])
    console = Console()
    console.print(f"{data.name} from {data.source}")
    console.print(f"  cache: {cache_root(cfg['data'].get('cache_dir'))}")
    for split in ("train", "val", "test"):
        s = getattr(data, split)
        if s is not None:
            console.print(f"  {split:5s} {len(s):6d} images  {tuple(s.images.shape[1:])}  {class_count(s.labels)}")
    console.print(f"  mean {tuple(round(m, 4) for m in data.mean)}  std {tuple(round(s, 4) for s in data.std)}")


def class_count(labels: Tensor) -> str:
    """The classes a split's labels hold, void (VOID, ignored in training) apart: `11 classes + void`."""
    values = labels.unique()
    void = bool((values == VOID).any())
    return f"{int((values != VOID).sum())} classes" + (" + void" if void else "")
