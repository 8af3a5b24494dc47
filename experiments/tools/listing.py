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
from .config import NAMED_GROUPS, check_override_keys, compose, option_names


def experiment_presets() -> list[str]:
    return option_names("experiment")


# Registry keys chosen through a config group: `optim=adamw` brings AdamW with its own
# keys, while `optim.name=adamw` would keep the other option's (refused, tools/config.py).
GROUP_CHOSEN = {f"{group}.name": group for group in ("optim", *NAMED_GROUPS)}


def option_blurb(group: str, name: str) -> str:
    """An option file's first sentence: what its opening comment asks or says first."""
    path = resources.files("sampler.configs") / group / f"{name}.yaml"
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    ends = [i + 1 for i in (text.find("? "), text.find("?")) if i >= 0] + \
           [i for i in (text.find(". "), text.find(": "), text.find(" (")) if i >= 0]
    first = text[:min(ends)] if ends else text
    return first if len(first) <= 100 else first[:99].rsplit(" ", 1)[0] + " …"


def print_registries() -> None:
    table = Table(title="choices (override with KEY=NAME)")
    for col in ("key", "name", "what it is"):
        table.add_column(col)
    for key, registry in CHOICES.items():
        group = GROUP_CHOSEN.get(key)
        names = option_names(group) if group else registry.names()
        for i, name in enumerate(names):
            what = registry.describe(name) if name in registry.names() else option_blurb(group, name)
            table.add_row((group or key) if i == 0 else "", name, what)
        table.add_section()
    for i, name in enumerate(experiment_presets()):
        table.add_row("experiment" if i == 0 else "", name, option_blurb("experiment", name) or "a preset")
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
