"""Image files: RGB uint8 arrays in, JPEG/PNG bytes out, written atomically."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reidaug.errors import ReidaugError
from reidaug.utils.io import atomic_write_bytes


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); a clear error for unreadable files."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if img is None:
        raise ReidaugError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_image(rgb: np.ndarray, ext: str = ".jpg", quality: int = 95) -> bytes:
    """Encode RGB uint8 as JPEG (with `quality`) or PNG, chosen by `ext`."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ReidaugError(f"cannot encode image as {ext}")
    return buf.tobytes()


def write_image(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write atomically: a reader never sees a truncated image."""
    atomic_write_bytes(path, encode_image(rgb, Path(path).suffix or ".jpg", quality))


def to_tensor(rgb: np.ndarray):
    """uint8 HWC -> float CHW in [-1, 1], the generators' range."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(t) -> np.ndarray:
    """float CHW (or BCHW) in [-1, 1] -> uint8 HWC (or BHWC) numpy, round((x + 1) * 127.5)."""
    return to_uint8_tensor(t).cpu().numpy()


def to_uint8_tensor(t):
    """float CHW (or BCHW) in [-1, 1] -> uint8 HWC (or BHWC) tensor on the same device, round((x + 1) * 127.5)."""
    import torch

    return ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def grid(rows: list[list[np.ndarray]], pad: int = 2, value: int = 255) -> np.ndarray:
    """Tile equally sized RGB images into one picture (rows of columns)."""
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), value, np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + h, x : x + w] = img
    return out
