"""Inception-v3 pool3 features for FID/KID, from a local TorchScript file.

The network is the 2015-12-05 TensorFlow Inception graph used by the reference FID code
(Heusel et al. 2017), as TorchScript: input (N, 3, 299, 299) float, RGB scaled as
``(x - 128) / 128`` from 0..255; output (N, 2048) pool3 features. Nothing is downloaded: the
file is looked up, in order, at the ``path`` argument, ``$COOPNETS_INCEPTION``,
``$COOPNETS_SHARED/inception/`` and ``<repo>/../shared/data/inception/``.

Preprocessing (one fixed rule, part of every cached statistic's key):
  1. pixels as float 0..255 (uint8 as is; floats in [0, 1] times 255);
  2. greyscale repeated to 3 channels;
  3. resized to 299x299 with ``torch.nn.functional.interpolate(mode="bilinear",
     align_corners=False, antialias=False)`` on the float 0..255 image (no rounding);
  4. scaled by (x - 128) / 128.
This differs from the TF reference (which resizes with TF's own bilinear), so FIDs agree with
published numbers only approximately.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..distributed import pick_device
from ..errors import UserError
from .features import as_image_batch, jit_load, pixels_255, reference_stats, run_batched

FILENAME = "pt_inception-2015-12-05.torchscript.pt"
RESIZE_RULE = "bilinear299-align_corners=False"
_MODELS: dict = {}


def inception_path(path=None) -> Path:
    """The Inception TorchScript file to use, or a UserError saying where to put it."""
    if path:
        candidates = [Path(path).expanduser()]
    elif os.environ.get("COOPNETS_INCEPTION"):
        candidates = [Path(os.environ["COOPNETS_INCEPTION"]).expanduser()]
    else:
        raise UserError(f"no Inception weights given: pass --inception PATH to {FILENAME} (or set "
                        "COOPNETS_INCEPTION); coopnets downloads nothing")
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise UserError(f"Inception weights not found at {candidates[0]}; put {FILENAME} there, or pass "
                    "--inception PATH (or set COOPNETS_INCEPTION)")


def load_inception(path=None, device="cpu") -> torch.jit.ScriptModule:
    """Load (once per file and device) the TorchScript feature network, in eval mode, fp32."""
    p = inception_path(path)
    key = (str(p), str(device))
    if key not in _MODELS:
        try:
            model = jit_load(p, device)
        except Exception as e:  # a truncated or foreign file
            raise UserError(f"cannot load Inception TorchScript {p}: {e}") from None
        _MODELS[key] = model.eval().float()  # an fp16 copy is upcast here
    return _MODELS[key]


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """(N, 1|3, H, W) uint8 or float in [0, 1] -> (N, 3, 299, 299) float in about [-1, 1]."""
    x = pixels_255(x)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (299, 299):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=False)
    return (x - 128.0) / 128.0


def extractor_id(path=None, precision: str = "fp32") -> str:
    """What the features depend on: the network file (name and size), resize rule, precision."""
    p = inception_path(path)
    return f"inception:{p.name}:{p.stat().st_size}|{RESIZE_RULE}|{precision}"


def inception_features(images, path=None, batch_size: int = 50, device="cpu", progress: bool = True,
                       threads: int | None = None, precision: str = "fp32") -> np.ndarray:
    """Pool3 features (N, 2048), float64, of images (N, C, H, W): uint8 or float in [0, 1].

    ``threads`` calls ``torch.set_num_threads`` (process-wide) first. ``precision`` "bf16"
    runs under ``torch.autocast`` (about 2x faster on CPUs with AVX-512 BF16, features off by
    about 1% relative; check the FID you get against fp32 before relying on it). On the CPU the
    input is passed channels_last, which is faster and gives fp32 features equal to ~1e-6.
    """
    if precision not in ("fp32", "bf16"):
        raise UserError(f"precision must be fp32 or bf16, got {precision!r}")
    if threads:
        torch.set_num_threads(int(threads))
    dev = pick_device(device) if isinstance(device, str) else torch.device(device)
    model = load_inception(path, dev)
    as_image_batch(images)  # check before the model is run

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = preprocess(x)
        if dev.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        if precision == "bf16":
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                return model(x).float()
        return model(x)

    return run_batched(fn, images, batch_size, dev, progress, desc="inception")


def inception_reference_stats(images, path=None, batch_size: int = 50, device="cpu",
                              progress: bool = True, threads: int | None = None,
                              precision: str = "fp32", cache_dir=None, use_cache: bool = True) -> dict:
    """Inception statistics (and features) of a reference set, cached by the pixels' hash."""
    return reference_stats(
        images, extractor_id(path, precision),
        lambda x: inception_features(x, path, batch_size, device, progress, threads, precision),
        cache_dir=cache_dir, use_cache=use_cache)
