"""The inference fast path of a generator: the same function as the eval-mode module, computed faster.

`for_inference(generator, ...)` returns a copy in eval mode with
* every BatchNorm2d folded into the convolution (or transposed convolution) that precedes it inside an
  nn.Sequential (`fold_batchnorm`): BN in eval mode is an affine map per channel, so W' = W * g / s and
  b' = (b - mu) * g / s + beta with s = sqrt(var + eps) (torch.nn.utils.fusion). Instance and group norms
  normalise with statistics of the input itself and cannot be folded; they stay.
* on the CPU, the stride-1 convolutions computed by NNPACK (`NNPACKConv2d`: Winograd F(6x6, 3x3) for 3x3
  kernels, 16x16 FFT tiles for larger ones) when a batch holds at least `nnpack_min_batch` images; below that,
  and for inputs of fewer than NNPACK_MIN_IN_CHANNELS channels (an RGB stem), oneDNN's direct convolution is as
  fast or faster on this project's machine (docs/performance.md). The transforms change the rounding, not the
  function (fp32 images agree to ~1e-6).
* channels_last memory format when asked (CUDA: Tensor Cores want NHWC; on the CPU it only helps the direct
  convolutions, docs/performance.md).
Run it under `torch.inference_mode()`. The module is generic: a method's file knows nothing about it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(module: nn.Module) -> int:
    """Fold each eval-mode BatchNorm2d into the Conv2d / ConvTranspose2d right before it in an nn.Sequential,
    in place (the BN becomes nn.Identity). Returns the number folded."""
    n = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for prev, name in zip(names, names[1:]):
            conv, bn = seq._modules[prev], seq._modules[name]
            if _foldable(conv, bn):
                seq._modules[prev] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq._modules[name] = nn.Identity()
                n += 1
    return n


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    if type(bn) is not nn.BatchNorm2d or bn.training or bn.running_mean is None:
        return False
    if isinstance(conv, nn.ConvTranspose2d):
        return conv.groups == 1 and not conv.training
    return type(conv) is nn.Conv2d and not conv.training


def nnpack_available() -> bool:
    """NNPACK is in this torch build and initialises on this CPU (also initialises it: a first call needs it)."""
    fn = getattr(torch, "_nnpack_available", None)
    return bool(fn is not None and fn() and hasattr(torch, "_nnpack_spatial_convolution"))


NNPACK_MIN_IN_CHANNELS = 8  # 3-channel stems ran slower through NNPACK than through oneDNN (docs/performance.md)
NNPACK_MAX_KERNEL = 16  # NNPACK's limit


class NNPACKConv2d(nn.Module):
    """A stride-1 Conv2d (zero padding) through NNPACK (Winograd for 3x3, FFT otherwise) on CPU float32 batches of
    at least `min_batch` images without autograd; `F.conv2d` otherwise (other devices, dtypes, small batches)."""

    def __init__(self, conv: nn.Conv2d, min_batch: int):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.padding, self.min_batch = list(conv.padding), min_batch
        self.register_buffer("zero_bias", torch.zeros(conv.out_channels, dtype=conv.weight.dtype,
                                                      device=conv.weight.device), persistent=False)  # fmt: skip

    @staticmethod
    def eligible(conv: nn.Module) -> bool:
        k = conv.kernel_size if isinstance(conv, nn.Conv2d) else (0, 0)
        return (type(conv) is nn.Conv2d and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
                and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
                and all(p < kk for p, kk in zip(conv.padding, k)) and max(k) <= NNPACK_MAX_KERNEL and max(k) > 1
                and conv.in_channels >= NNPACK_MIN_IN_CHANNELS)  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and x.dim() == 4 and x.shape[0] >= self.min_batch and not torch.is_grad_enabled()):  # fmt: skip
            bias = self.bias if self.bias is not None else self.zero_bias
            return torch._nnpack_spatial_convolution(x.contiguous(), self.weight, bias, self.padding, [1, 1])
        return F.conv2d(x, self.weight, self.bias, 1, self.padding)


def use_nnpack(module: nn.Module, min_batch: int) -> int:
    """Replace every eligible Conv2d (see NNPACKConv2d) in place; returns the number replaced (0 when NNPACK is
    not available)."""
    if not nnpack_available():
        return 0
    n = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if NNPACKConv2d.eligible(child):
                setattr(parent, name, NNPACKConv2d(child, min_batch))
                n += 1
    return n


def for_inference(generator: nn.Module, device: torch.device | str = "cpu", *, fold_bn: bool = True,
                  nnpack_min_batch: int = 0, channels_last: bool = False) -> nn.Module:  # fmt: skip
    """A copy of `generator` on `device` in eval mode, prepared for fast inference (see module doc).
    `nnpack_min_batch` 0 keeps the direct convolutions."""
    fast = copy.deepcopy(generator).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if fold_bn:
        fold_batchnorm(fast)
    if nnpack_min_batch > 0 and torch.device(device).type == "cpu":
        use_nnpack(fast, nnpack_min_batch)
    fast = fast.to(device)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast
