"""Pixel conventions and picture files.

Images live as uint8 tensors (N, C, H, W) on disk and in memory; the networks see float
tensors in [-1, 1]. ``to_float`` is the one place where that conversion happens, and
``to_uint8`` the one place where it is undone.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import UserError


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1]."""
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 pixels, got {x.dtype}")
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (values outside are clipped)."""
    return ((x.detach().float().cpu() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> float in [0, 1], the range the metrics use."""
    return ((x.detach().float() + 1.0) / 2.0).clamp_(0.0, 1.0)


def make_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile a batch (N, C, H, W) in [-1, 1] into one (H', W', C) uint8 array."""
    x = to_uint8(x)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[top:top + h, left:left + w] = x[i].permute(1, 2, 0).numpy()
    return grid


def save_array_png(arr: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (H, W, C) uint8 array as a PNG (C = 1 or 3), atomically."""
    arr = arr[..., 0] if arr.shape[-1] == 1 else arr
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)


def save_grid(x: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> None:
    """Save a batch (N, C, H, W) in [-1, 1] as one PNG grid."""
    save_array_png(make_grid(x, nrow), path)


def save_images(x: torch.Tensor, folder: str | os.PathLike, start: int = 0) -> list[Path]:
    """Save each image of a batch in [-1, 1] as ``folder/{index:06d}.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_uint8(x)):
        p = folder / f"{start + i:06d}.png"
        save_array_png(img.permute(1, 2, 0).numpy(), p)
        paths.append(p)
    return paths


def read_image(source, name: str, channels: int | None) -> np.ndarray:
    """Decode one image file (path or file object) to an (H, W, C) uint8 array.

    ``channels`` 1 converts to greyscale, 3 to RGB, None keeps greyscale as 1 and everything
    else as RGB. A file that cannot be decoded raises a UserError naming it.
    """
    try:
        with Image.open(source) as im:
            im.load()
            if channels is None:
                channels = 1 if im.mode in ("L", "LA", "I", "I;16", "1", "F") else 3
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot read image {name}: {e}; remove or replace the file") from None
    return arr[..., None] if arr.ndim == 2 else arr


def resize(arr: np.ndarray, size: int, center_crop: bool) -> np.ndarray:
    """Optionally centre-crop to a square, then resize (H, W, C) uint8 to size x size (bicubic)."""
    h, w = arr.shape[:2]
    if center_crop and h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        arr = arr[top:top + s, left:left + s]
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    out = np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out
