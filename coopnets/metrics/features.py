"""Shared plumbing for feature-based metrics: pixel conventions, batched extraction, and a
cache of reference statistics keyed by a hash of the source pixels.

Pixel convention of every feature extractor here (``coopnets.metrics.pixels``): ``images`` is a
torch tensor or NumPy array (N, C, H, W), either uint8 in 0..255 or float in [0, 1].
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UserError
from .fid import feature_stats, load_stats, save_stats
from .pixels import unit_pixels


def jit_load(path, device="cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` without its deprecation notice (the files are TorchScript by design)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device)


def as_image_batch(images, name: str = "images") -> torch.Tensor:
    """(N, C, H, W) tensor, uint8 as is or float32 in [0, 1], checked."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{name}: expected a tensor or array (N, C, H, W), got {type(images).__name__}")
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise UserError(f"{name}: expected a batch (N, C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    return unit_pixels(x, name, dtype=torch.float32)


def pixels_255(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float in [0, 1] (as ``as_image_batch`` returns) -> float32 0..255."""
    if x.dtype == torch.uint8:
        return x.float()
    return x.float() * 255.0


def run_batched(fn: Callable[[torch.Tensor], torch.Tensor], images, batch_size: int = 50,
                device="cpu", progress: bool = True, desc: str = "features") -> np.ndarray:
    """Apply ``fn`` to ``images`` in batches on ``device``; returns float64 (N, D) on the CPU."""
    x = as_image_batch(images)
    if batch_size <= 0:
        raise UserError("--batch-size must be positive")
    out = []
    with torch.inference_mode(), tqdm(total=len(x), desc=desc, unit="img", disable=not progress) as bar:
        for lo in range(0, len(x), batch_size):
            f = fn(x[lo:lo + batch_size].to(device))
            out.append(f.detach().float().cpu().double().numpy().reshape(len(f), -1))
            bar.update(min(batch_size, len(x) - lo))
    return np.concatenate(out)


def hash_images(images) -> str:
    """sha256 of a batch's shape, dtype and pixels (the key of the statistics cache)."""
    x = as_image_batch(images).contiguous().cpu()
    h = hashlib.sha256(f"{tuple(x.shape)}|{x.dtype}|".encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$COOPNETS_CACHE`` or ``~/.cache/coopnets``; statistics go in its ``stats/`` folder."""
    env = os.environ.get("COOPNETS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "coopnets"


def reference_stats(images, extractor: str, features_fn: Callable[[object], np.ndarray],
                    cache_dir=None, keep_features: bool = True, use_cache: bool = True) -> dict:
    """Feature statistics of a reference set, from the cache when the same pixels were seen.

    The cache file is ``<cache_dir>/stats/<sha256(extractor | pixel hash)[:24]>.npz`` holding
    mu, sigma, count, source_hash, extractor and (``keep_features``) the float32 features
    that KID needs. ``extractor`` must name everything that changes the features (network
    file, resize rule, precision).
    """
    src = hash_images(images)
    key = hashlib.sha256(f"{extractor}|{src}".encode()).hexdigest()[:24]
    path = Path(cache_dir or default_cache_dir()) / "stats" / f"{key}.npz"
    if use_cache and path.is_file():
        try:
            st = load_stats(path)
            if st["source_hash"] == src and st["extractor"] == extractor and (
                    "features" in st or not keep_features):
                return st
        except UserError:
            pass  # a damaged cache entry is recomputed
    feats = features_fn(images)
    mu, sigma = feature_stats(feats)
    st = {"mu": mu, "sigma": sigma, "count": len(feats), "source_hash": src,
          "extractor": extractor, "features": feats}
    if use_cache:
        try:
            save_stats(path, mu, sigma, len(feats), src, extractor, feats if keep_features else None)
        except OSError:
            pass  # a read-only cache only costs time
    return st
