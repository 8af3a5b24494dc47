"""The config `sampler train` would run, composed without running it, and a friendlier
check of override keys than Hydra's "Key 'poool' is not in struct".

Hydra rejects a misspelt key with advice to append it (`+model.poool=avg`),
which is the wrong fix for a typo. This composes the config with the override's
group choices (so `task=... head.x=...` is checked against the right tree) and
names the closest real keys instead.
"""
from __future__ import annotations

import copy
import difflib
import functools
from importlib import resources
from typing import Any, Mapping, Sequence

from omegaconf import OmegaConf

from ..errors import ConfigError
from ..runs.hparams import always_present, flatten, option_values


def compose(overrides: Sequence[str]) -> dict[str, Any]:
    """The config `sampler train` would run with these overrides, as plain values."""
    from hydra import compose as hydra_compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("sampler.configs", version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def option_names(group: str) -> list[str]:
    """The options of one of sampler's config groups: its folder's YAML files, sorted."""
    folder = resources.files("sampler.configs") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def config_groups() -> set[str]:
    root = resources.files("sampler.configs")
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")}


def check_override_keys(args: Sequence[str]) -> None:
    """Raise `ConfigError` for a plain `key=value` override whose key does not exist."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    candidates = [a for i, a in enumerate(args) if "=" in a and not a.startswith("-")
                  and not (i and args[i - 1] in ("-sc", "--shell-completion"))]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except HydraException:
        return  # Hydra reports malformed overrides itself
    groups = config_groups()
    check_group_choices(overrides, groups)
    check_optimizer_choice(overrides)
    values = []
    choices = []
    for o in overrides:
        key = o.key_or_group
        if o.package is not None or o.type is not OverrideType.CHANGE or "/" in key or key.startswith("hydra"):
            continue
        if key in groups:
            first = next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.get_value_element_as_str()
            choices.append(f"{key}={first}")
        else:
            values.append(key)
    check_name_keys(overrides, choices)
    if not values or (all(always_present(key) for key in values) and not any(c.endswith("=null") for c in choices)):
        return  # every composition has these keys: no need to compose one (a third of a second)
    if (chosen := chosen_keys(choices)) is not None and all(key in chosen for key in values):
        return  # the options this command chooses have them (a tenth of a second)
    try:
        cfg = compose(choices)
    except (HydraException, OmegaConfBaseException):
        return  # a wrong group choice: Hydra's own message lists the options
    keys = flatten(cfg)
    known = set(keys) | {prefix for k in keys for prefix in _prefixes(k)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ConfigError(key, f"is not a config key; {hint}`sampler train --cfg job` prints every key "
                              f"(add a new key on purpose with +{key}=...)")


def check_group_choices(overrides: Sequence[Any], groups: set[str]) -> None:
    """A group choice that names no option (`optim=adm`, `experiment=quikstart`,
    `hydra/launcher=jobllib`, or one value of a sweep over them) gets one paragraph with
    the options, instead of Hydra's composition error and its search path, exit 1.
    An option file found settles it; only a miss asks Hydra, whose list includes the
    plugins' options (hydra/launcher=joblib). `overrides`: Hydra's parsed overrides."""
    from hydra.core.override_parser.types import OverrideType

    root = resources.files("sampler.configs")
    for o in overrides:
        key = o.key_or_group
        if (o.package is not None or o.type is OverrideType.DEL or not (key in groups or key.startswith("hydra/"))
                or (o.is_sweep_override() and not o.is_discrete_sweep())):
            continue
        values = [str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override() else \
            [o.get_value_element_as_str()]
        for value in values:
            if value == "null":  # Hydra's own error is a ValueError traceback
                raise ConfigError(key, f"a config group cannot be set to null on the command line; leave {key}= "
                                  f"out for its default, or drop the group with ~{key}")
            if (root / key / f"{value}.yaml").is_file():
                continue
            options = group_options(key)
            if value in options:
                continue
            close = difflib.get_close_matches(value, options, n=2, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ConfigError(key, f"{value!r} is not one of its options; {hint}choose one of: "
                              f"{', '.join(options) or '(none found)'}"
                              + (" (`sampler ls` describes the presets)" if key == "experiment" else ""))


NAMED_GROUPS = ("data", "task", "sched")  # groups whose option sets `<group>.name` (optim: check_optimizer_choice)


def check_name_keys(overrides: Sequence[Any], choices: Sequence[str]) -> None:
    """`data.name=camvid`, `task.name=segmentation`, `sched.name=cosine` (the keys
    `sampler ls` lists) switch the registry entry but keep the other keys of the group's
    chosen option: CamVid under CIFAR-10's augmentation, a segmentation task without its
    keys, each ending in a traceback after the data had loaded. The group's option brings
    the entry with its own keys, so a name that differs from the one the command's group
    choices compose to (`choices`: `group=option`, a preset's included) is refused,
    naming `group=name`. Composes only when such a key is given."""
    wanted = {group: names for group in NAMED_GROUPS if (names := _values(overrides, f"{group}.name"))}
    if not wanted:
        return
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(choices)
    except (HydraException, OmegaConfBaseException, ValueError):
        return  # Hydra says what is wrong with the choices
    for group, names in wanted.items():
        own = (cfg.get(group) or {}).get("name")
        options = option_names(group)
        for name in names:
            if own is not None and name != own:
                instead = (f"choose it with {group}={name}, which brings its own keys" if name in options
                           else f"the options of {group} are {', '.join(options)}")
                raise ConfigError(f"{group}.name", f"{name} would keep the other {group}.* keys of {own}, the "
                                  f"{group} this command chooses; {instead}")


def group_options(group: str) -> list[str]:
    """The options Hydra knows for a config group: sampler's files and its plugins'."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module("sampler.configs", version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def check_optimizer_choice(overrides: Sequence[Any]) -> None:
    """A preset's `optim.*` values are tuned for its own optimizer: refuse a command line that
    hands them to another one. `experiment=cifar10_fast optim=adamw` would otherwise train
    AdamW at SGD's lr 0.2, 100x its own default, without a word (Hydra applies a preset's
    values after every group's option). Presets that tune a whole optimizer pick an option
    (`override /optim: airbench_sgd`) instead, which a command line's `optim=` replaces
    whole. `optim.name=X` that differs from the chosen option's optimizer is refused too: it
    would keep the other optimizer's values; `optim=X` brings X's own.
    `overrides`: Hydra's parsed overrides."""
    given = {o.key_or_group for o in overrides}
    if not given & {"experiment", "optim", "optim.name"}:
        return  # train.yaml's own choices: nothing to read on every start-up
    root = resources.files("sampler.configs")
    names, choices = _values(overrides, "optim.name"), _values(overrides, "optim")
    for preset in _values(overrides, "experiment") or [None]:
        own, tuned = None, {}
        if preset is not None and (root / "experiment" / f"{preset}.yaml").is_file():
            own = _preset_choice(preset, "optim")
            tuned = {k: v for k, v in option_values(root / "experiment", preset).items()
                     if k.startswith("optim.") and k != "optim.name" and k not in given}
        for choice in choices or [own[0] if own else _primary_choices()["optim"]]:
            if own is not None and choice != own[0] and tuned:
                raise ConfigError("optim", _leak_message(preset, own, choice, tuned))
            if names and (root / "optim" / f"{choice}.yaml").is_file():  # else Hydra lists the options
                _check_optim_name(choice, names)


def _values(overrides: Sequence[Any], key: str) -> list[str]:
    """What the last plain `key=...` override sets: its one value, or each of a sweep's."""
    from hydra.core.override_parser.types import OverrideType

    found = [o for o in overrides if o.key_or_group == key and o.package is None and o.type is OverrideType.CHANGE]
    if not found:
        return []
    o = found[-1]
    return [str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.get_value_element_as_str()]


def _check_optim_name(choice: str, names: list[str]) -> None:
    folder = resources.files("sampler.configs") / "optim"
    values = option_values(folder, choice)
    for name in names:
        if name != values.get("optim.name") and (folder / f"{name}.yaml").is_file():
            shown = ", ".join(f"{k[6:]} {values[k]}" for k in ("optim.lr", "optim.momentum") if k in values)
            raise ConfigError("optim.name", f"{name} would keep optim={choice}'s values ({shown}, ...), which are "
                              f"set for {values.get('optim.name')}; choose the optimizer with optim={name}, which "
                              f"brings {name}'s own (`sampler train --cfg job optim={name}` prints them)")


def _leak_message(preset: str, own: tuple[str, str], choice: str, leaked: dict[str, Any]) -> str:
    option, where = own
    folder = resources.files("sampler.configs") / "optim"
    theirs = option_values(folder, choice) if (folder / f"{choice}.yaml").is_file() else {}
    listed = ", ".join(f"{k}={v}" for k, v in sorted(leaked.items()))
    defaults = ", ".join(f"{k}={theirs[k]}" for k in sorted(leaked) if k in theirs)
    return (f"experiment={preset} tunes {listed} for {option} ({where}); with optim={choice} "
            f"{'that value' if len(leaked) == 1 else 'those values'} would be handed to {choice}"
            + (f", whose own {'default is' if len(leaked) == 1 else 'defaults are'} {defaults}" if defaults else "")
            + f". Say what {choice} should use on the command line ("
            + " ".join(f"{k}=<value>" if k in theirs else f"~{k}" for k in sorted(leaked))
            + (f"; ~key drops a key {choice} does not take" if set(leaked) - set(theirs) else "")
            + f"), or leave out optim={choice} to keep {option}")


def _primary_choices(top: Any = None) -> dict[str, Any]:
    """The option train.yaml's defaults list picks for each group (`top`: train.yaml, parsed)."""
    if top is None:
        top = OmegaConf.create((resources.files("sampler.configs") / "train.yaml").read_text())
    return {str(next(iter(d))): d[next(iter(d))] for d in top.defaults
            if isinstance(d, Mapping) and len(d) == 1 and not str(next(iter(d))).startswith("override ")}


def _preset_choice(preset: str, group: str) -> tuple[str, str]:
    """The `group` option a preset runs with and where that comes from: its own or an
    extended preset's `override /group: option`, else train.yaml's default."""
    folder = resources.files("sampler.configs") / "experiment"
    chosen = (str(_primary_choices()[group]), "train.yaml's default")
    for entry in OmegaConf.create((folder / f"{preset}.yaml").read_text()).get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_" and (folder / f"{entry}.yaml").is_file():
            chosen = _preset_choice(entry, group)
        elif isinstance(entry, Mapping) and f"override /{group}" in entry:
            chosen = (str(entry[f"override /{group}"]), f"its override /{group}")
    return chosen


def chosen_keys(choices: Sequence[str]) -> set[str] | None:
    """The keys (leaves and sections) of the composition these `group=option` choices make,
    read from train.yaml and the chosen options' own files, without composing; None where
    that reading could be wrong: a preset or an option that changes other groups' choices
    (`override /data: camvid`), or a group set to null. Never more keys than Hydra's
    composition has, so a key missing here is only checked by composing."""
    root = resources.files("sampler.configs")
    top = OmegaConf.create((root / "train.yaml").read_text())
    picked = _primary_choices(top)
    picked.update(c.split("=", 1) for c in choices)
    if picked.pop("experiment", None) not in (None, "null") or any(v in (None, "null") for v in picked.values()):
        return None
    keys = set(flatten(OmegaConf.to_container(top, resolve=False), "")) - {"defaults"}  # type: ignore[arg-type]
    keys = {k for k in keys if not k.startswith(("defaults", "hydra."))}
    for group, option in picked.items():
        folder = root / group
        if not (folder / f"{option}.yaml").is_file():
            return None  # a wrong choice: composing says so in Hydra's words
        if any(line.strip().startswith("- override /") for line in (folder / f"{option}.yaml").read_text().splitlines()):
            return None
        keys.update(option_values(folder, str(option)))
    return keys | {prefix for k in keys for prefix in _prefixes(k)}


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def is_multirun(args: Sequence[str]) -> bool:
    """Whether a `sampler train` command line asks for a sweep (-m, --multirun, hydra.mode=MULTIRUN)."""
    return any(a in ("-m", "--multirun") or a.lower() == "hydra.mode=multirun" for a in args)


def check_sweep_values(args: Sequence[str]) -> None:
    """Each value of a command line's sweep (`-m model.pool=max,avgg`), checked as its job
    would check it (`runner.check_config`) before any job starts: otherwise the bad
    value's job fails after the others have trained, hours into a sweep, exit 1. The
    first job's config is composed once; each other value of a plain key is set into a
    copy of it (a Hydra composition costs 0.2 s, a check 0.02 s), a group's value is
    composed. A value that is only wrong together with another key's is left to its job."""
    from hydra import compose as hydra_compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ..runs.hparams import LAUNCH_KEYS
    from ..train.runner import check_config

    if not is_multirun(args):
        return
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except HydraException:
        return  # Hydra reports malformed overrides itself
    swept = [(a.split("=", 1)[0], o) for a, o in zip(candidates, overrides)
             if o.is_sweep_override() and o.is_discrete_sweep()]
    if not swept:
        return
    fixed = [a for a, o in zip(candidates, overrides) if not o.is_sweep_override()]
    first = {key: f"{key}={next(iter(o.sweep_string_iterator()))}" for key, o in swept}
    groups = config_groups()

    def composed(choices: Sequence[str]) -> dict[str, Any] | None:
        try:
            cfg = OmegaConf.to_container(hydra_compose("train", overrides=list(choices)), resolve=True)
        except (HydraException, OmegaConfBaseException, ValueError):
            return None  # the sweep reports what Hydra cannot compose
        for launch_key in LAUNCH_KEYS:
            cfg.pop(launch_key, None)  # type: ignore[union-attr]
        return cfg  # type: ignore[return-value]

    values = {key: list(zip(o.sweep_string_iterator(), o.sweep_iterator())) for key, o in swept}
    plain = {key: o.type is OverrideType.CHANGE and o.package is None and key not in groups and "/" not in key
             for key, o in swept}

    with initialize_config_module("sampler.configs", version_base="1.3"):
        base = composed([*fixed, *first.values()])
        if base is None:
            return

        said: dict[tuple[tuple[str, int], ...], ConfigError | None] = {}

        def error(assign: dict[str, int]) -> ConfigError | None:
            """What check_config says of the job with these swept values (index per key;
            the other keys at their first), each job checked once."""
            job = tuple(sorted((k, i) for k, i in assign.items() if i))
            if job not in said:
                said[job] = _error(dict(job))
            return said[job]

        def _error(assign: dict[str, int]) -> ConfigError | None:
            if any(not plain[k] for k in assign):
                cfg = composed([*fixed, *(f"{k}={v[assign.get(k, 0)][0]}" for k, v in values.items())])
                if cfg is None:
                    return None
            else:
                cfg = copy.deepcopy(base)
                for k, i in assign.items():
                    *path, leaf = k.split(".")
                    node = functools.reduce(lambda d, p: d.get(p) if isinstance(d, dict) else None, path, cfg)
                    if isinstance(node, dict) and leaf in node:
                        node[leaf] = values[k][i][1]
            try:
                check_config(cfg)
            except ConfigError as e:
                return e
            return None

        def everywhere(assign: dict[str, int], keep: str | None) -> bool:
            """Whether the error stays when any other swept key takes another value: if
            not, it belongs to a combination, and only that job is refused (in its run)."""
            return all(error({**assign, k: i}) is not None for k in values if k != keep
                       for i in range(len(values[k])) if i != assign.get(k, 0))

        if (e := error({})) is not None and everywhere({}, None):
            raise e  # every job's: a fixed override (said as for a single run)
        for key in values:
            for i, (text, _) in enumerate(values[key]):
                if (e := error({key: i})) is not None and everywhere({key: i}, key):
                    raise ConfigError(e.key, f"{e.message} (with {key}={text}, a value of this sweep: no job was "
                                      "started)") from None


def prefetch_data(args: Sequence[str]) -> None:
    """A sweep's data set, fetched once by the launching process before any job starts:
    every job would otherwise try to download it, at the same time under joblib or SLURM.
    Single runs fetch their own; a sweep over data keys is left to its jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from sampler.blocks.registry import call_with_accepted

    from ..data import DATASETS

    if not is_multirun(args):
        return
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
        cfg = compose([a for a, o in zip(candidates, overrides) if not o.is_sweep_override()])
    except (HydraException, OmegaConfBaseException):
        return  # the sweep itself reports a malformed command line
    if any(o.is_sweep_override() and o.key_or_group.lstrip("+~").startswith("data") for o in overrides):
        return
    fetch = getattr(DATASETS.get(cfg["data"]["name"], "data.name"), "fetch", None)
    if fetch is not None:
        call_with_accepted(fetch, cfg["data"])
