"""`reidaug import-checkpoint`: published generator weights as a reidaug run folder that generate and augment use.

The published files are plain state dicts of the authors' generator classes. Each source here knows the key names
of one such layout (read from the public code, not copied from it) and rewrites them to reidaug's module names;
the model config (channels, blocks, norm, dropout) is read off the tensors themselves, so the file decides the
architecture. Any key or shape that does not fit refuses the file with one line naming the first mismatch.
Files load with `torch.load(weights_only=True)`: a pickle that needs anything more is refused, never executed.

  pose-transfer   the PATN code (`latest_net_netG.pth`): a `PATNetwork` whose `.model` holds stream1_down
                  (image encoder), stream2_down (pose encoder on [S_c, S_t]), att.i (PATBs with
                  conv_block_stream1 / conv_block_stream2) and stream1_up (decoder)
  xinggan         the XingGAN code (`latest_net_netG.pth`): the same encoders and block bodies, the SA/AS
                  projections att.i.{query,key,value}_conv and gamma (shared by both branches), the two decoders
                  stream1_up / x2_con, x2_norm, stream2_up and the co-attention head atte_con* / atte_norm*
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from reidaug import __version__
from reidaug.config import to_dict
from reidaug.errors import ReidaugError
from reidaug.utils.io import atomic_write_text, check_output_dir, file_sha256, load_weights, staged_dir

IMPORT_RECORD = "import.json"


@dataclass(frozen=True)
class Source:
    """One published layout: the method it becomes, key renaming, and the model config its tensors imply."""

    name: str
    method: str
    description: str
    rename: Callable[[str], str | None]  # published key -> reidaug generator key (None: not a generator key)
    model_config: Callable[[dict[str, torch.Tensor]], dict]


def _renamer(rules) -> Callable[[str], str | None]:
    """Published key -> reidaug key by the first matching (regex, replacement) rule, after the wrappers'
    `module.` (DataParallel) and `model.` (the authors' network wrapper) prefixes."""
    compiled = [(re.compile(p), r) for p, r in rules]

    def rename(key: str) -> str | None:
        key = key.removeprefix("module.").removeprefix("model.")
        for pattern, repl in compiled:
            if pattern.match(key):
                return pattern.sub(repl, key, count=1)
        return None

    return rename


# Sequential indices agree on both sides (the Dropout of a block body sits at index 4 in both), so only the
# module names change.
_PATN_RULES = ((r"^stream1_down\.", "enc_a."), (r"^stream2_down\.", "enc_s."),
               (r"^att\.(\d+)\.conv_block_stream2\.", r"blocks.\1.conv_s."))  # fmt: skip
_pose_transfer_key = _renamer([*_PATN_RULES, (r"^stream1_up\.", "decoder."),
                               (r"^att\.(\d+)\.conv_block_stream1\.", r"blocks.\1.conv_p.")])  # fmt: skip
_xinggan_key = _renamer([*_PATN_RULES, (r"^att\.(\d+)\.conv_block_stream1\.", r"blocks.\1.conv_i."),
                         (r"^att\.(\d+)\.query_conv\.", r"blocks.\1.sa.q."),
                         (r"^att\.(\d+)\.key_conv\.", r"blocks.\1.sa.k."),
                         (r"^att\.(\d+)\.value_conv\.", r"blocks.\1.sa.v."),
                         (r"^att\.(\d+)\.gamma$", r"blocks.\1.sa.gamma"),
                         (r"^stream1_up\.", "fusion.app."), (r"^stream2_up\.", "fusion.shape.3."),
                         (r"^x2_con\.", "fusion.shape.0."), (r"^x2_norm\.", "fusion.shape.1."),
                         (r"^atte_con\.", "fusion.attention.0."), (r"^atte_norm\.", "fusion.attention.1."),
                         (r"^atte_con1\.", "fusion.attention.3."), (r"^atte_norm1\.", "fusion.attention.4."),
                         (r"^atte_con2\.", "fusion.attention.6.")])  # fmt: skip


def _family_config(state: dict[str, torch.Tensor], rename, block_body: str, what: str) -> dict:
    """ngf, blocks, downsamplings, norm and dropout of a PATN-family generator, read off its tensors."""
    keys = {rename(k): v for k, v in state.items()}
    try:
        stem, pose_in = keys["enc_a.1.weight"], keys["enc_s.1.weight"].shape[1]
    except KeyError:
        raise ReidaugError(f"not a {what}: no stream1_down.1.weight / stream2_down.1.weight") from None
    blocks = {int(m.group(1)) for k in keys if k and (m := re.match(r"blocks\.(\d+)\.", k))}
    downs = (
        sum(1 for k, v in keys.items() if k and re.fullmatch(r"enc_a\.\d+\.weight", k) and v.dim() == 4) - 1
    )
    batch = "enc_a.2.running_mean" in keys
    if not batch and "enc_a.1.bias" not in keys:
        raise ReidaugError(
            f"{what} with neither BatchNorm statistics nor conv biases: an unknown normalisation"
        )
    # a block body: conv, N, act at 1-3; with dropout the second conv is at 6 (else 5)
    dropout = 0.5 if f"blocks.0.{block_body}.6.weight" in keys else 0.0
    return {"ngf": int(stem.shape[0]), "image_channels": int(stem.shape[1]), "pose_channels": int(pose_in) // 2,
            "n_blocks": len(blocks), "n_downsampling": downs, "norm": "batch" if batch else "instance",
            "dropout": dropout}  # fmt: skip


def _pose_transfer_config(state: dict[str, torch.Tensor]) -> dict:
    return _family_config(state, _pose_transfer_key, "conv_p", "Pose-Transfer PATN generator")


def _xinggan_config(state: dict[str, torch.Tensor]) -> dict:
    cfg = _family_config(state, _xinggan_key, "conv_i", "XingGAN generator")
    head = next((v for k, v in state.items() if _xinggan_key(k) == "fusion.attention.6.weight"), None)
    if head is None:
        raise ReidaugError("not a XingGAN generator: no co-attention head (atte_con2.weight)")
    return {**cfg, "n_images": (int(head.shape[1]) - 1) // 2}  # 2N + 1 co-attention maps


SOURCES: dict[str, Source] = {
    "pose-transfer": Source("pose-transfer", "patn", "the published PATN code's generator (PATNetwork)",
                            _pose_transfer_key, _pose_transfer_config),
    "xinggan": Source("xinggan", "xinggan", "the published XingGAN code's generator (XingNetwork)",
                      _xinggan_key, _xinggan_config),
}  # fmt: skip


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A published state dict, loaded with weights_only=True (a DataParallel or wrapper dict is unwrapped)."""
    if not path.is_file():
        raise ReidaugError(f"checkpoint file {path} not found")
    state = load_weights(path, what="state dict")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise ReidaugError(f"{path} is not a state dict (a mapping of names to tensors)")
    return state


def map_state_dict(state: dict[str, torch.Tensor], source: Source, target: dict[str, torch.Tensor],
                   where: Path) -> dict[str, torch.Tensor]:  # fmt: skip
    """The published tensors under reidaug's names; one line for the first key or shape that does not fit.
    BatchNorm counters missing from files of PyTorch < 0.4.1 are taken as 0."""
    mapped = {}
    for key, value in state.items():
        new = source.rename(key)
        if new is None or new not in target:
            raise ReidaugError(
                f"{where}: key {key!r} has no counterpart in reidaug's {source.method} generator"
            )
        if tuple(value.shape) != tuple(target[new].shape):
            raise ReidaugError(f"{where}: {key!r} has shape {tuple(value.shape)}, reidaug's {new!r} expects "
                               f"{tuple(target[new].shape)}")  # fmt: skip
        mapped[new] = value.to(target[new].dtype)
    for key, value in target.items():
        if key not in mapped:
            if not key.endswith("num_batches_tracked"):
                raise ReidaugError(f"{where}: no weights for reidaug's {key!r} (the file lacks them)")
            mapped[key] = torch.zeros_like(value)
    return mapped


def import_checkpoint(source: str, path: str | Path, out: str | Path, method: str | None = None,
                      overrides=(), overwrite: bool = False) -> Path:  # fmt: skip
    """Write the run folder `out` (checkpoints/latest.pt and import.json) from a published generator file."""
    from reidaug.models import registry
    from reidaug.models.checkpoint import FORMAT
    from reidaug.train.checkpoint import save_checkpoint
    from reidaug.train.config import load_method_config

    if source not in SOURCES:
        raise ReidaugError(f"unknown checkpoint source {source!r}; choose from {', '.join(SOURCES)}")
    src = SOURCES[source]
    if method is not None and method != src.method:
        raise ReidaugError(f"--from {source} holds a {src.method} generator, not {method}")
    path, out = Path(path), Path(out)
    check_output_dir(out, overwrite, remove=False)
    state = read_state_dict(path)
    model = src.model_config(state)
    cfg = load_method_config(src.method, None, [*(f"model.{k}={v}" for k, v in model.items()), *overrides])
    generator = registry.get(src.method).generator(cfg.model)
    weights = map_state_dict(state, src, generator.state_dict(), path)
    generator.load_state_dict(weights)  # the mapped dict fits exactly: any failure here is a bug
    record = {"source": source, "description": src.description, "file": path.name, "sha256": file_sha256(path),
              "tensors": len(state), "method": src.method, "model": model,
              "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reidaug_version": __version__}  # fmt: skip
    state_out = {"reidaug_version": __version__, "method": src.method, "config": to_dict(cfg), "iteration": 0,
                 "model": {f"generator.{k}": v for k, v in generator.state_dict().items()},
                 "inference": "generator", "imported_from": record, "data": None}  # fmt: skip
    with staged_dir(out, overwrite) as tmp:  # all or nothing; an old run is replaced only at the end
        save_checkpoint(tmp / "checkpoints" / "latest.pt", state_out)
        atomic_write_text(tmp / IMPORT_RECORD, json.dumps({**record, "checkpoint": "checkpoints/latest.pt",
                                                           "format": FORMAT}, indent=2) + "\n")  # fmt: skip
    return out / "checkpoints" / "latest.pt"
