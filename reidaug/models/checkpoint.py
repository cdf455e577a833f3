"""Reading training checkpoints, and the generator of one for inference (what generate and augment use).

A checkpoint (written by reidaug.train) is a dict loadable with `torch.load(weights_only=True)`:
  format, reidaug_version, method, config (the resolved method config as a plain dict), iteration (completed),
  model (the method's state dict: generator, discriminators, EMA copies, buffers), inference (the path of the
  module generation uses, e.g. "generator" or "ema.module"), ranks [per DDP rank: rng and per-rank module
  state such as image pools], optimizers {name: state}, schedulers {name: state}, scaler, sampler, replicas,
  data (the images the generator was trained on).
Checkpoints of the first format (reidaug 0.1, before methods owned their optimisation) still load for
generation; resuming one is refused with one line.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reidaug.data.market import IMAGE_SIZE
from reidaug.errors import ReidaugError, offenders
from reidaug.utils.io import load_weights

FORMAT = "reidaug-gan-checkpoint/2"
FORMAT_V1 = "reidaug-gan-checkpoint/1"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its checkpoints/latest.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise ReidaugError(f"checkpoint {path} not found")
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load and check a training checkpoint (a file or a run folder); one error line for a missing, unreadable
    or foreign file. First-format checkpoints come back converted (`converted_from` says so)."""
    path = resolve_checkpoint(path)
    ckpt = load_weights(path, map_location, "checkpoint")
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == FORMAT_V1:
        return _from_v1(ckpt, path)
    if fmt != FORMAT:
        raise ReidaugError(f"{path} is not a reidaug training checkpoint")
    for key in ("method", "config", "model", "inference"):
        if key not in ckpt:
            raise ReidaugError(f"checkpoint {path} lacks {key!r}")
    return ckpt


def _from_v1(old: dict, path: Path) -> dict:
    """A first-format (PATN-family) checkpoint as the current format, for generation: its generator and
    discriminator weights under the method's state-dict names."""
    try:
        models = old["models"]
        model = {f"generator.{k}": v for k, v in models["generator"].items()}
        for d, state in models["discriminators"].items():
            model.update({f"discriminators.{d}.{k}": v for k, v in state.items()})
        return {"format": FORMAT, "converted_from": FORMAT_V1, "method": old["method"], "config": old["config"],
                "iteration": old["iteration"], "model": model, "inference": "generator", "data": old.get("data"),
                "reidaug_version": old.get("reidaug_version")}  # fmt: skip
    except (KeyError, TypeError, AttributeError):
        raise ReidaugError(f"checkpoint {path} is damaged (first-format keys missing)") from None


def check_method(ckpt: dict, expected: str | None, where) -> None:
    """One error line when a checkpoint was trained with another method than `expected` (None: any)."""
    if expected is not None and ckpt["method"] != expected:
        raise ReidaugError(f"checkpoint {where} was trained with method {ckpt['method']}, not {expected}")


def check_resumable(ckpt: dict, where) -> None:
    """First-format checkpoints generate but do not resume (their optimizer state predates named optimizers);
    imported published weights have no training state at all."""
    if ckpt.get("imported_from"):
        src = ckpt["imported_from"]
        raise ReidaugError(f"the run in {where} holds imported weights ({src.get('source')}: {src.get('file')}): "
                           "they generate, but have no training state to resume")  # fmt: skip
    if ckpt.get("converted_from"):
        raise ReidaugError(f"the checkpoint in {where} has the first reidaug format: it still generates, but "
                           "cannot be resumed; start a new run")  # fmt: skip


def inference_state(ckpt: dict) -> dict[str, torch.Tensor]:
    """The state dict of the checkpoint's inference module (its entries of `model`, prefix removed)."""
    prefix = ckpt["inference"] + "."
    return {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}


def load_generator(checkpoint: str | Path | None = None, method_name: str | None = None, ckpt: dict | None = None):
    """(the inference module in eval mode with the checkpoint's weights, checkpoint dict). Built from the model
    config alone: no discriminator, no loss network, no loss setting."""
    from reidaug.config import load_config
    from reidaug.models import registry

    ckpt = ckpt if ckpt is not None else load_checkpoint(checkpoint)
    check_method(ckpt, method_name, checkpoint)
    spec = registry.get(ckpt["method"])
    model_cfg = load_config(spec.model_schema, dict(ckpt["config"].get("model") or {}))
    generator = spec.generator(model_cfg)
    try:
        missing, unexpected = generator.load_state_dict(inference_state(ckpt), strict=False)
    except RuntimeError as e:  # "Error(s) in loading state_dict for X:" then a line per size mismatch
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ReidaugError(f"checkpoint weights do not fit {ckpt['method']}: {lines[1 if len(lines) > 1 else 0][:200]}") from None
    if missing or unexpected:
        raise ReidaugError(f"checkpoint weights do not fit {ckpt['method']}: {len(missing)} tensors missing "
                           f"({offenders(missing, 2)}), {len(unexpected)} unexpected ({offenders(unexpected, 2)})")  # fmt: skip
    generator.image_size = tuple(ckpt["config"].get("image_size") or IMAGE_SIZE)
    return generator.eval(), ckpt
