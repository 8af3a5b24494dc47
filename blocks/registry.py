"""Name → builder maps for every choice a user ablates (DESIGN §3).

A registry key is a short lowercase name (`max`, `avg`, `bilinear`) so that an
override such as `model.pool=avg` stays a plain value, readable in run names and
in the TensorBoard HParams table. Like timm's `get_act_layer`, a lookup also takes
a class or a builder function (library users) or None (the `none` entry).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T", bound=Callable[..., Any])

# Parameter names under which a layer class takes the channel count a builder is given.
CHANNEL_PARAMS = ("num_features", "num_channels", "channels", "in_channels")


class ConfigError(ValueError):
    """A user-facing configuration mistake.

    `key` is the config key relative to the section that was passed to the
    builder (`pool`, `widths`); callers that know the section prefix it
    (`model.pool`) with `with_prefix` so the message names the dotted key.
    """

    exit_code = 2  # what the CLI exits with: a user's mistake

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")

    def with_prefix(self, prefix: str) -> "ConfigError":
        return type(self)(f"{prefix}.{self.key}" if prefix else self.key, self.message)


def is_int(value: Any) -> bool:
    """A whole number as a config value: an int, not a bool (YAML's true is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number as a config value: an int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Registry(Generic[T]):
    """A small name → builder map whose lookup errors list the valid names.

    Builders take their positional inputs first (a channel count, a model) and
    keyword arguments after; `meta` keeps per-entry facts other code reads
    (an activation's init gain, say)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, help: str = "", **meta: Any) -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = fn
            self._help[name] = help or (inspect.getdoc(fn) or "").split("\n")[0]
            self._meta[name] = meta
            return fn

        return add

    def get(self, spec: Any, key: str | None = None) -> T:
        """The builder for `spec`: a registered name, None (the `none` entry), a class
        (built with the arguments it accepts, the channel count under its own name) or
        any other callable (used as the builder). `key` is the config key named in errors."""
        if spec is None and "none" in self._entries:
            spec = "none"
        if isinstance(spec, str) and spec in self._entries:
            return self._entries[spec]
        if isinstance(spec, type):
            return _class_builder(spec)  # type: ignore[return-value]
        if callable(spec):
            return spec
        raise ConfigError(
            key or self.kind,
            f"unknown {self.kind} {spec!r}; choose one of: {', '.join(self.names())}",
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self, name: str) -> str:
        return self._help[name]

    def meta(self, spec: Any, field: str, default: Any = None) -> Any:
        return self._meta.get(spec, {}).get(field, default) if isinstance(spec, str) else default

    def arguments(self, positional: int = 1, also: Iterable[Callable[..., Any]] = ()) -> set[str]:
        """Every keyword argument some entry (or one of `also`) takes by name, after its
        first `positional` parameters."""
        names: set[str] = set()
        for fn in [*self._entries.values(), *also]:
            params = list(inspect.signature(fn).parameters.values())[positional:]
            names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        return names

    def check_args(self, args: dict[str, Any] | None, key: str, positional: int = 1,
                   spec: Any = None, ignore: Iterable[str] = ()) -> None:
        """Refuse an argument no entry takes (a typo would otherwise be dropped silently)."""
        also = [self.get(spec)] if spec is not None and not isinstance(spec, str) else []
        known = self.arguments(positional, also) - set(ignore)
        unknown = sorted(set(args or {}) - known)
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}" if key else unknown[0], f"no {self.kind} takes this argument; choose from: "
                              f"{', '.join(sorted(known)) or '(none)'}")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _class_builder(cls: type) -> Callable[..., Any]:
    """A builder `(channels, **kwargs)` for a layer class such as nn.BatchNorm2d or nn.ReLU."""
    params = inspect.signature(cls).parameters
    channel_param = next((p for p in CHANNEL_PARAMS if p in params), None)

    def build(channels: int, **kwargs: Any) -> Any:
        if channel_param is not None:
            kwargs[channel_param] = channels
        return cls(**accepted(cls, kwargs))

    build.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("channels", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         *(p for name, p in params.items() if name != channel_param and name != "self"
           and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))])
    build.__name__ = cls.__name__
    return build


def call_with_accepted(fn: Callable[..., Any], kwargs: dict[str, Any], *args: Any) -> Any:
    """Call `fn(*args, **kwargs)` passing only the keyword arguments `fn` accepts.

    This lets one config section (say `norm_args` with momentum, eps and
    num_groups) serve every entry of a registry: BatchNorm takes momentum,
    GroupNorm takes num_groups, each ignores what does not apply to it.
    `Registry.check_args` refuses what no entry takes.
    """
    return fn(*args, **accepted(fn, kwargs))


def accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of `kwargs` that `fn` takes by name."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}
