"""`--method NAME` -> the method's config schemas and builders.

Each model file calls `register(MethodSpec(...))` at import; `get()` imports the built-in methods lazily. A method
defined elsewhere (a plugin, a test) registers itself the same way before the command runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from reidaug.errors import ReidaugError

# Built-in methods: --method name -> module under reidaug.models that registers it.
BUILTIN = {
    "patn": "reidaug.models.patn",
    "apatn": "reidaug.models.apatn",
    "xinggan": "reidaug.models.xinggan",
    "xingganpp": "reidaug.models.xinggan",
    "twostream": "reidaug.models.twostream",
    "attnflow": "reidaug.models.attnflow",
    "multisource": "reidaug.models.multisource",
}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    model_schema: type  # dataclass: generator and discriminator hyper-parameters
    loss_schema: type  # dataclass: loss weights and options
    build: Callable  # (model_cfg, loss_cfg) -> Method (training: generator, discriminators, losses)
    generator: Callable  # (model_cfg) -> PoseGenerator (inference: what generate and augment build)
    optimizers: Callable  # () -> {name: OptimizerConfig}: the method's named optimizers and their defaults
    stages: Callable = field(default=list)  # () -> [StageConfig]: default training stages ([]: one stage)
    train: dict = field(default_factory=dict)  # the paper's values of train.* where they differ from the defaults
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


def num_sources(model_cfg) -> int:
    """M, the sources per target a model config asks for (`num_sources`, 1 when the schema has none)."""
    m = int(getattr(model_cfg, "num_sources", 1))
    if m < 1:
        raise ReidaugError(f"model.num_sources must be at least 1, got {m}")
    return m


if __name__ == "__main__":  # `python -m reidaug.models.registry`: the method names, for scripts and the Makefile
    print(" ".join(names()))
