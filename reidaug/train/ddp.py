"""Multi-process training with DistributedDataParallel, as launched by
`torchrun --nproc_per_node N -m reidaug train ...` (NCCL on CUDA, gloo on the CPU; never DataParallel).

Each trained part of a method (`Method.parts`; a ModuleDict part child by child) is wrapped in its own DDP
module in place, so a method's own forward code runs unchanged. Parts a step only evaluates run under
`no_sync` with frozen parameters (reidaug.train.steps.Steps.frozen): their gradients are averaged in the step
that trains them.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from reidaug.utils.runtime import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device_pref: str = "auto") -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))  # fmt: skip
    return DistInfo(rank, world, local_rank, device)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather_objects(info: DistInfo, obj) -> list:
    """Every rank's `obj`, as a list on every rank (a one-element list without DDP)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def part_modules(method: nn.Module) -> dict[str, nn.Module]:
    """The trained modules of a method by path: each of `method.parts`, a container part (ModuleDict,
    ModuleList) child by child."""
    out = {}
    for path in method.parts:
        part = method.get_submodule(path)
        if isinstance(part, (nn.ModuleDict, nn.ModuleList)):
            out.update({f"{path}.{k}": m for k, m in part.named_children()})
        else:
            out[path] = part
    return out


class Wrapped:
    """A method whose trained parts (`method.parts`) are each DDP-wrapped in place under torchrun, so the
    method's own forward code runs unchanged; `raw` holds the unwrapped modules."""

    def __init__(self, method, info: DistInfo, find_unused_parameters: bool = False):
        self.method = method
        self.raw: dict[str, nn.Module] = part_modules(method)
        self.wrapped: dict[str, nn.Module] = dict(self.raw)
        if info.enabled:
            ids = [info.device.index] if info.device.type == "cuda" else None
            for path, m in self.raw.items():
                if any(p.requires_grad for p in m.parameters()):
                    self.wrapped[path] = DDP(m, device_ids=ids, find_unused_parameters=find_unused_parameters)
                    method.set_submodule(path, self.wrapped[path])

    def _put(self, modules: dict[str, nn.Module]) -> None:
        for path, m in modules.items():
            self.method.set_submodule(path, m)

    def restore(self) -> None:
        """Unwrap for good (after training): the method holds its raw modules again."""
        self._put(self.raw)

    @contextlib.contextmanager
    def unwrapped(self):
        """Temporarily put the raw modules back (checkpoints, rank-0-only sample grids: no collectives)."""
        self._put(self.raw)
        try:
            yield self.method
        finally:
            self._put(self.wrapped)


def convert_sync_bn(module: nn.Module) -> nn.Module:
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
