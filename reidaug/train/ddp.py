"""Multi-process training with DistributedDataParallel, as launched by
`torchrun --nproc_per_node N -m reidaug train ...` (NCCL on CUDA, gloo on the CPU; never DataParallel).

The generator and each discriminator are wrapped in their own DDP module in place (`method.generator`,
`method.discriminators[k]`), so a method's own forward code runs unchanged. During the generator step the
discriminators run under `no_sync` with frozen parameters; gradients of D are averaged in the D step only.
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


class Wrapped:
    """The raw modules of a method whose generator and discriminators may be DDP-wrapped in place."""

    def __init__(self, method, info: DistInfo, find_unused_parameters: bool = False):
        self.method = method
        self.generator: nn.Module = method.generator
        self.discriminators: dict[str, nn.Module] = dict(method.discriminators.items())
        self.ddp: list[DDP] = []
        if info.enabled:
            ids = [info.device.index] if info.device.type == "cuda" else None
            kw = {"device_ids": ids, "find_unused_parameters": find_unused_parameters}
            method.generator = DDP(self.generator, **kw)
            self.ddp.append(method.generator)
            for k, d in self.discriminators.items():
                method.discriminators[k] = DDP(d, **kw)
                self.ddp.append(method.discriminators[k])

    def restore(self) -> None:
        """Unwrap for good (after training): the method holds its raw modules again."""
        self.method.generator = self.generator
        for k, d in self.discriminators.items():
            self.method.discriminators[k] = d

    def d_no_sync(self):
        """Context: discriminators' forward passes without gradient synchronisation (the G step)."""
        stack = contextlib.ExitStack()
        for k in self.discriminators:
            d = self.method.discriminators[k]
            if isinstance(d, DDP):
                stack.enter_context(d.no_sync())
        return stack

    @contextlib.contextmanager
    def unwrapped(self):
        """Temporarily put the raw modules back (rank-0-only work such as sample grids: no collectives)."""
        g, ds = self.method.generator, dict(self.method.discriminators.items())
        self.method.generator = self.generator
        for k, d in self.discriminators.items():
            self.method.discriminators[k] = d
        try:
            yield self.method
        finally:
            self.method.generator = g
            for k, d in ds.items():
                self.method.discriminators[k] = d


def convert_sync_bn(module: nn.Module) -> nn.Module:
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
