"""The step helper the trainer hands to `Method.training_step`: how a method updates its parts without knowing
about mixed precision, loss scaling, DDP or stages.

  with step.autocast(): ...                  the run's AMP policy (bf16 / fp16 on CUDA, off on the CPU)
  with step.frozen("discriminators"): ...    those parts' parameters frozen and their DDP gradient sync off
  step.step("generator", loss)               zero-grad, (scaled) backward, optimizer step; a list of names
                                             steps several optimizers on one backward
  step.trains("discriminators")              whether the current stage trains that optimizer
  step.loss, step.stage, step.iteration      the loss config with the stage's overrides, the stage, the 0-based
                                             iteration
The trainer hands the method the batch of the stage (`stage_batch`: its first `stage.sources` sources).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


class Steps:
    def __init__(self, method: nn.Module, optimizers: dict[str, torch.optim.Optimizer], scaler, amp, spans):
        self.method, self.optimizers, self.scaler, self.amp, self.spans = method, optimizers, scaler, amp, spans
        self.iteration, self.stage, self.loss, self._active = 0, None, None, set()

    def begin(self, iteration: int) -> None:
        """Enter iteration `iteration` (0-based): its stage and the stage's loss settings."""
        self.iteration = iteration
        _, _, self.stage, self.loss = next(s for s in self.spans if s[0] <= iteration < s[1])
        self._active = set(self.stage.train) or set(self.optimizers)

    def autocast(self):
        return self.amp.autocast()

    def trains(self, name: str) -> bool:
        return name in self._active

    @contextlib.contextmanager
    def frozen(self, *paths: str):
        """No gradients for the parameters of these parts (submodule paths), and no DDP sync of their forward
        passes (their gradients are synchronised in the pass that trains them)."""
        with contextlib.ExitStack() as stack:
            flags = []
            for path in paths:
                part = self.method.get_submodule(path)
                for m in part.modules():
                    if isinstance(m, DDP):
                        stack.enter_context(m.no_sync())
                flags += [(p, p.requires_grad) for p in part.parameters()]
            for p, _ in flags:
                p.requires_grad_(False)
            try:
                yield
            finally:
                for p, flag in flags:
                    p.requires_grad_(flag)

    def step(self, names: str | list[str] | tuple[str, ...], loss: torch.Tensor, retain_graph: bool = False) -> None:
        names = [names] if isinstance(names, str) else list(names)
        idle = [n for n in names if n not in self._active]
        if idle:  # a method bug, not a user error
            raise RuntimeError(f"optimizer(s) {idle} stepped in stage {self.stage.name!r}, which does not train them")
        for n in names:
            self.optimizers[n].zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward(retain_graph=retain_graph)
        for n in names:
            self.scaler.step(self.optimizers[n])


def stage_batch(batch: dict[str, torch.Tensor], stage) -> dict[str, torch.Tensor]:
    """The batch a stage trains on: the first `stage.sources` of its M sources (all of them when unset or larger)."""
    k = getattr(stage, "sources", None)
    if k is None or k >= batch["src_img"].shape[1]:
        return batch
    return {**batch, "src_img": batch["src_img"][:, :k], "src_kp": batch["src_kp"][:, :k]}
