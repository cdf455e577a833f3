"""`--method NAME` -> the method's config schemas and builder.

Each model file calls `register(MethodSpec(...))` at import; `get()` imports the built-in methods lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from reidaug.errors import ReidaugError

# Built-in methods: --method name -> module under reidaug.models that registers it.
BUILTIN = {
    "patn": "reidaug.models.patn",
    "apatn": "reidaug.models.apatn",
}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    model_schema: type  # dataclass: generator and discriminator hyper-parameters
    loss_schema: type  # dataclass: loss weights and options
    build: Callable  # (model_cfg, loss_cfg) -> GANMethod
    paper: str = ""


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    return sorted(set(BUILTIN) | set(_REGISTRY))


def get(name: str) -> MethodSpec:
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        raise ReidaugError(f"unknown method {name!r}; choose from {', '.join(names())}")
    return _REGISTRY[name]
