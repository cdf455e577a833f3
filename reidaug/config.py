"""Typed configuration: dataclass schemas filled from YAML files in `configs/` plus `--set key=value` overrides.

Every schema lives next to the code that uses it; this module only loads and merges. A YAML file may start from
another one with a top-level `base: NAME` (a path or a name under configs/) and state only what differs.
"""

from __future__ import annotations

from dataclasses import is_dataclass
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reidaug.errors import ReidaugError, first_line

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def check_choice(name: str, value: str, choices) -> None:
    """One clear config error for an enumerated option."""
    if value not in choices:
        raise ReidaugError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path as given, or a name looked up under `configs/` (`methods/patn` -> configs/methods/patn.yaml)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    candidate = CONFIG_DIR / (str(name_or_path) + ("" if p.suffix in (".yaml", ".yml") else ".yaml"))
    if candidate.exists():
        return candidate
    raise ReidaugError(f"config not found: {name_or_path} (looked in . and {CONFIG_DIR})")


def load_config(schema: type[T], source: str | Path | dict | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> T:  # fmt: skip
    """Merge schema defaults <- YAML file (or a plain dict, e.g. from a checkpoint) <- `a.b=c` overrides and
    return a typed schema instance."""
    if not is_dataclass(schema):
        raise TypeError(f"{schema!r} is not a dataclass")
    try:
        cfg = OmegaConf.structured(schema)
        if isinstance(source, dict):
            cfg = OmegaConf.merge(cfg, OmegaConf.create(source))
        elif source is not None:
            cfg = OmegaConf.merge(cfg, _load_yaml(resolve_config_path(source)))
        for item in overrides:
            if "=" not in item:
                raise ReidaugError(f"--set expects key=value, got {item!r}")
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, TypeError, ValueError) as e:  # merges of mismatched containers raise TypeError
        raise ReidaugError(f"bad configuration: {first_line(e)}") from None


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()):
    """A YAML config with its `base:` chain merged underneath it."""
    if path.resolve() in seen:
        raise ReidaugError(f"config {path} is its own base")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # yaml errors carry multi-line context
        raise ReidaugError(f"cannot parse config {path}: {first_line(e)}") from None
    if not OmegaConf.is_dict(loaded) or "base" not in loaded:
        return loaded
    base = loaded.pop("base")
    return OmegaConf.merge(_load_yaml(resolve_config_path(str(base)), (*seen, path.resolve())), loaded)


def to_dict(cfg) -> dict:
    """A plain dict of a schema instance (for checkpoints, manifests and logs)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def to_yaml(cfg) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
