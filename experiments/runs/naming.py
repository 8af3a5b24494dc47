"""What a run is called where runs are listed side by side: the keys its sweep varies,
and a short label of their values (`pool=max,seed=0`) for TensorBoard's HParams table."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .hparams import LAUNCH_KEYS, NOT_HPARAMS, hparam_value

# Where a run is or how it shows, not what it computes: never part of a label.
NOT_NAMED = (*NOT_HPARAMS, *LAUNCH_KEYS)


def swept_keys() -> list[str]:
    """The config keys the running sweep varies: its command line's sweep overrides
    (`model.pool=max,avg`) and `hydra.sweeper.params` (presets). Empty outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return []
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return []
    keys = [str(k) for k in (hc.sweeper.get("params") or {})]
    keys += _swept_on_command_line(Path(hc.sweep.dir) / "multirun.yaml")
    return list(dict.fromkeys(k.lstrip("+~") for k in keys if k not in NOT_NAMED))


def _swept_on_command_line(multirun_yaml: Path) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        overrides = [str(o) for o in OmegaConf.load(multirun_yaml).hydra.overrides.task]
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # no multirun.yaml (a sweeper that writes none): the sweeper's params still count
        return []
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def trial_label(config: Mapping[str, Any], keys: Sequence[str], overrides: Sequence[str] = ()) -> str:
    """`pool=max,seed=0`: the values of `keys` (a config group's choice shows as its
    `.name`), each under the last part of its key unless two keys share it. Without
    keys, the run's own overrides name it; without those, `default`."""
    if not keys:
        named = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in NOT_NAMED]
        return ",".join(named) or "default"
    resolved = [k if k in config or f"{k}.name" not in config else f"{k}.name" for k in keys]
    short = [k.removesuffix(".name").rsplit(".", 1)[-1] for k in resolved]
    names = [s if short.count(s) == 1 else k for s, k in zip(short, resolved)]
    return ",".join(f"{n}={hparam_value(config.get(k))}" for n, k in zip(names, resolved))
