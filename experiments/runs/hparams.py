"""Configs as flat dotted keys, and the HParams schema every job of a sweep shares (DESIGN §5)."""
from __future__ import annotations

import functools
from importlib import resources
from typing import Any, Mapping

from omegaconf import OmegaConf

from sampler.blocks.registry import is_number

# Keys that describe where things are, not what was run: kept out of the HParams table and
# of a run's label, and free to change when a run is resumed.
NOT_HPARAMS = ("data.root", "data.cache_dir", "trainer.progress", "data.download", "data.url", "data.md5")
# Not part of what a job ran: how the sweep was launched and what a sweeper optimises.
LAUNCH_KEYS = ("resume", "optimized_metric")
# What a resumed run may change: where things are, and how many threads compute the same.
RESUMABLE_CHANGES = (*NOT_HPARAMS, "trainer.threads")


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def hparam_value(v: Any) -> Any:
    """TensorBoard takes bool, number or string: lists become `[a,b]`, None `none`."""
    if v is None:
        return "none"
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(str(x) for x in v) + "]"
    return str(v)


def hparam_schema() -> dict[str, str]:
    """Every config key any shipped option can have, and the one type all jobs write it as.

    A key missing from some option of its group (sgd's `momentum`, absent from
    adamw) is still written by every job ("none" where absent), so a sweep over
    `optim=sgd,adamw` gets both columns. TensorBoard refuses to filter a column
    whose values mix types, so the type comes from the shipped defaults, not from
    the job: `number` when every option has a number there, `bool` (written as
    the strings "true"/"false", a discrete domain) when every option has a bool,
    `string` otherwise.
    """
    return {key: hparam_kind(v) for key, v in _shipped_values()[0].items()}


def always_present(key: str) -> bool:
    """Whether every composition of the shipped configs has `key` (a leaf or a section),
    whatever option each group names: a key of train.yaml, or one that every option of
    its group has. A key of some options only (sgd's `optim.momentum`) is not."""
    return any(k == key or k.startswith(key + ".") for k in _shipped_values()[1])


@functools.cache
def _shipped_values() -> tuple[dict[str, list[Any]], frozenset[str]]:
    """Per key, its values across train.yaml and every option of every group (None where an
    option lacks a key of its group); and the keys every composition has: train.yaml's and
    those that every option of some group sets. Read once per process: the override check
    and the run record both ask."""
    root = resources.files("sampler.configs")
    top = OmegaConf.to_container(OmegaConf.create((root / "train.yaml").read_text()))
    values = {k: [v] for k, v in top.items() if k not in ("defaults", "hydra", "resume", "optimized_metric")}  # type: ignore[union-attr]
    complete = {k for k in top if k not in ("defaults", "hydra")}  # type: ignore[union-attr]
    for group in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        if group.name in ("hydra", "experiment") or group.name.startswith("_"):
            continue
        names = sorted(f.name[:-5] for f in group.iterdir() if f.name.endswith(".yaml"))
        options = [option_values(group, name) for name in names]
        for key in sorted({k for o in options for k in o}):
            found = [o[key] for o in options if key in o]
            if len(found) == len(options):
                complete.add(key)
            elif key.startswith(group.name + "."):
                found.append(None)  # an option without the key: its jobs write "none"
            values.setdefault(key, []).extend(found)
    return values, frozenset(complete)


def option_values(group: Any, name: str) -> dict[str, Any]:
    """One option's flat keys, after the siblings it extends (`defaults: [progressive, _self_]`)."""
    text = (group / f"{name}.yaml").read_text()
    cfg: dict[str, Any] = OmegaConf.to_container(OmegaConf.create(text)) or {}  # type: ignore[assignment]
    out: dict[str, Any] = {}
    for base in cfg.pop("defaults", None) or []:
        if isinstance(base, str) and base != "_self_" and (group / f"{base}.yaml").is_file():
            out.update(option_values(group, base))
    global_package = any(line.strip() == "# @package _global_" for line in text.splitlines()[:5])
    out.update(flatten(cfg, "" if global_package else group.name + "."))
    return out


def hparam_kind(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(is_number(v) for v in values):
        return "number"
    return "string"
