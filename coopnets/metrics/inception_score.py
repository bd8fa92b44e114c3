"""Inception Score (Salimans et al., "Improved techniques for training GANs", NeurIPS 2016).

    IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = E_x p(y|x),

computed on each of ``splits`` equal chunks of the samples; the mean and standard deviation
over the chunks are reported (the protocol of the original code). No Inception
*classification* weights are available in this project, so the classifier is supplied by the
user: any callable (or TorchScript file) mapping a batch of images to logits.
Closed forms: identical predictions give 1; confident predictions spread evenly over K
classes give K.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import UserError
from .features import jit_load, run_batched


def _to_probs(x, kind: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2 or len(x) == 0:
        raise UserError(f"inception score: expected (N, K) probabilities or logits with K >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise UserError("inception score: predictions contain NaN or inf")
    if kind == "auto":
        kind = "probs" if (x >= 0).all() and np.allclose(x.sum(1), 1.0, atol=1e-4) else "logits"
    if kind == "logits":
        x = np.exp(x - x.max(1, keepdims=True))
    elif kind != "probs":
        raise UserError(f"kind must be auto, probs or logits, got {kind!r}")
    return x / x.sum(1, keepdims=True)


def inception_score(probs_or_logits, splits: int = 10, kind: str = "auto") -> tuple[float, float]:
    """(mean, std) of the Inception Score over ``splits`` chunks of (N, K) predictions.

    ``kind`` "auto" treats rows that are non-negative and sum to 1 as probabilities and
    anything else as logits (softmax applied). Chunks follow ``numpy.array_split`` order.
    """
    p = _to_probs(probs_or_logits, kind)
    if not 1 <= splits <= len(p):
        raise UserError(f"inception score: splits must be between 1 and the number of samples ({len(p)})")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        # KL with the convention 0 log 0 = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def load_classifier(path, device="cpu") -> torch.jit.ScriptModule:
    """A user-supplied TorchScript classifier returning logits, or a UserError."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"classifier {p} does not exist; pass --classifier PATH to a TorchScript "
                        "file that maps images in [-1, 1] (N, C, H, W) to logits (N, K)")
    try:
        return jit_load(p, device).eval()
    except Exception as e:
        raise UserError(f"cannot load classifier TorchScript {p}: {e}") from None


def classifier_logits(images, classifier: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 100,
                      device="cpu", progress: bool = True) -> np.ndarray:
    """Logits (N, K) of ``classifier`` on images (N, C, H, W).

    ``images`` are uint8 or floats in [0, 1]; the classifier receives float32 images in [-1, 1]
    at their own size; resizing or normalising is the classifier's job.
    """
    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float() * 2.0 - 1.0
        out = classifier(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise UserError("the classifier must return a tensor of logits (N, K)")
        return out

    return run_batched(fn, images, batch_size, device, progress, desc="classifier")
