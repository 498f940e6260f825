"""Components built by name from config (the threestudio pattern, without the magic).

Each component family (body models, guidance backends, stages) has one ``Registry``; a
component registers itself with a decorator and is built from its config's ``name`` field.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, family: str, config_key: str) -> None:
        self.family = family
        self.config_key = config_key  # the config key users set to choose, e.g. "body"
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise KeyError(f"{self.family} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._builders:
            raise KeyError(
                f"Unknown {self.family} {name!r} (config key `{self.config_key}`). "
                f"Choose one of: {', '.join(self.names())}."
            )
        return self._builders[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)
