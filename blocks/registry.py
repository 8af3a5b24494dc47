"""Name → builder maps for every choice a user ablates (DESIGN §3).

A registry key is a short lowercase name (`max`, `avg`, `bilinear`) so that an
override such as `model.pool=avg` stays a plain value, readable in run names and
in the TensorBoard HParams table.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class ConfigError(ValueError):
    """A user-facing configuration mistake.

    `key` is the config key relative to the section that was passed to the
    builder (`pool`, `widths`); callers that know the section prefix it
    (`model.pool`) with `with_prefix` so the message names the dotted key.
    """

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")

    def with_prefix(self, prefix: str) -> "ConfigError":
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.message)


class Registry(Generic[T]):
    """A small name → builder map whose lookup errors list the valid names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = fn
            doc = help or (inspect.getdoc(fn) or "").split("\n")[0]
            self._help[name] = doc
            return fn

        return add

    def get(self, name: Any, key: str | None = None) -> T:
        """The builder for `name`; `key` is the config key named in the error."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        raise ConfigError(
            key or self.kind,
            f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}",
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self, name: str) -> str:
        return self._help[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def call_with_accepted(fn: Callable[..., Any], kwargs: dict[str, Any], *args: Any) -> Any:
    """Call `fn(*args, **kwargs)` passing only the keyword arguments `fn` accepts.

    This lets one config section (say `norm_args` with momentum, eps and
    num_groups) serve every entry of a registry: BatchNorm takes momentum,
    GroupNorm takes num_groups, each ignores what does not apply to it.
    """
    return fn(*args, **accepted(fn, kwargs))


def accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of `kwargs` that `fn` takes by name."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}
