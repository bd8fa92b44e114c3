"""Pixel-level image quality: PSNR, SSIM, recovery error (pattern completion) and the
average pairwise SSIM of a sample set (a diversity measure: lower is more diverse).

Layouts (NumPy arrays or torch tensors):
  (N, C, H, W)  a batch (C = 1 or 3)
  (H, W, C)     one image, channels last
  (H, W)        one greyscale image
Pixels are floats in [0, ``data_range``] (default [0, 1]) or uint8 (scaled to that range);
floats outside it are refused (``coopnets.metrics.pixels``). Everything is computed in float64.

SSIM follows Wang et al., "Image quality assessment: from error visibility to structural
similarity", IEEE TIP 2004: Gaussian window sigma 1.5 truncated to 11x11, K1 = 0.01,
K2 = 0.03, population (co)variances; the SSIM map is averaged over the pixels at least 5
from the border (as scikit-image does), then over channels. This matches
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=...)``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .pixels import unit_pixels

WIN, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def to_batch(x, name: str = "images", data_range: float = 1.0) -> torch.Tensor:
    """Any documented layout -> float64 (N, C, H, W) CPU tensor in [0, data_range]."""
    t = unit_pixels(x.cpu() if isinstance(x, torch.Tensor) else x, name, data_range)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t.permute(2, 0, 1)[None]
    elif t.ndim != 4:
        raise UserError(f"{name}: expected (N,C,H,W), (H,W,C) or (H,W), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise UserError(f"{name}: is empty")
    return t


def _pair(a, b, data_range: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = to_batch(a, "first images", data_range), to_batch(b, "second images", data_range)
    if x.shape != y.shape:
        raise UserError(f"images to compare have different shapes {tuple(x.shape)} and {tuple(y.shape)} "
                        "(N, C, H, W); they must match one to one")
    return x, y


def _reduce(values: torch.Tensor, reduction: str):
    if reduction == "mean":
        return float(values.mean())
    if reduction == "none":
        return values.numpy()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(a, b, data_range: float = 1.0, reduction: str = "mean"):
    """Peak signal-to-noise ratio 10 log10(R^2 / MSE) in dB, per image.

    ``reduction`` "mean" returns the mean of the per-image values (inf when all are
    identical), "none" the float64 array (N,).
    """
    x, y = _pair(a, b, data_range)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    vals = 10.0 * torch.log10(data_range**2 / mse)  # inf where the images are equal
    return _reduce(vals, reduction)


def _gauss_window() -> torch.Tensor:
    r = torch.arange(WIN, dtype=torch.float64) - WIN // 2
    g = torch.exp(-(r**2) / (2 * SIGMA**2))
    return g / g.sum()


def ssim_per_image(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM (N,) of two float64 batches (N, C, H, W) with H, W >= 11."""
    h, w = x.shape[-2:]
    if h < WIN or w < WIN:
        raise UserError(f"SSIM needs images of at least {WIN}x{WIN} pixels, got {h}x{w}")
    g = _gauss_window()

    def filt(z):  # separable Gaussian, 'valid' region only (= skimage's cropped map)
        return z.unfold(2, WIN, 1).matmul(g).unfold(3, WIN, 1).matmul(g)

    ux, uy = filt(x), filt(y)
    vx, vy, vxy = filt(x * x) - ux * ux, filt(y * y) - uy * uy, filt(x * y) - ux * uy
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(2).mean(2).mean(1)


def ssim(a, b, data_range: float = 1.0, reduction: str = "mean"):
    """Structural similarity (Wang et al. 2004), per image averaged over channels.

    ``reduction`` "mean" returns the mean over the batch, "none" the float64 array (N,).
    """
    x, y = _pair(a, b, data_range)
    return _reduce(ssim_per_image(x, y, data_range), reduction)


def recovery_error(original, recovered, mask) -> float:
    """Mean absolute error over the occluded pixels (CoopNets pattern completion, Sec. 6).

    ``mask`` is 1 where a pixel was observed and 0 where it was occluded (the convention of
    the completion experiments); it must broadcast against the images after both are put in
    (N, C, H, W) layout, e.g. (H, W), (N, 1, H, W) or the images' own shape. Pixels are in
    [0, 1] (or uint8). The error is summed over every occluded pixel and channel and divided
    by their number.
    """
    x, y = _pair(original, recovered)
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        mask = mask.to(torch.uint8)
    elif isinstance(mask, np.ndarray) and mask.dtype == bool:
        mask = mask.astype(np.uint8)
    m = to_batch(mask, "mask")
    try:
        occluded = torch.broadcast_to(m == 0, x.shape)
    except RuntimeError:
        raise UserError(f"mask of shape {tuple(m.shape)} (as N,C,H,W) does not fit images "
                        f"{tuple(x.shape)}") from None
    if not occluded.any():
        raise UserError("the mask occludes nothing (0 marks occluded pixels, 1 observed ones)")
    return float((x - y).abs()[occluded].mean())


def pairwise_ssim(images, max_pairs: int = 1000, seed: int = 0, data_range: float = 1.0) -> float:
    """Average SSIM over pairs (i, j), i < j, of one sample set: higher means less diverse.

    Uses all pairs when there are at most ``max_pairs``, otherwise ``max_pairs`` distinct
    pairs drawn uniformly with a NumPy generator seeded by ``seed``.
    """
    x = to_batch(images, "images", data_range)
    n = len(x)
    if n < 2:
        raise UserError("pairwise SSIM needs at least 2 images")
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        flat = np.random.default_rng(seed).choice(total, size=max_pairs, replace=False)
        i, j = _unrank_pairs(flat, n)
    vals = []
    for lo in range(0, len(i), 256):
        ii, jj = torch.as_tensor(i[lo:lo + 256]), torch.as_tensor(j[lo:lo + 256])
        vals.append(ssim_per_image(x[ii], x[jj], data_range))
    return float(torch.cat(vals).mean())


def _unrank_pairs(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Map indices 0..n(n-1)/2-1 to pairs (i, j), i < j, in row-major upper-triangle order."""
    k = k.astype(np.int64)
    # row i starts at offset i*n - i*(i+1)/2; solve for the largest i with start <= k
    i = np.floor(n - 0.5 - np.sqrt((n - 0.5) ** 2 - 2 * k)).astype(np.int64)
    start = i * n - i * (i + 1) // 2
    i = np.where(start > k, i - 1, i)
    start = i * n - i * (i + 1) // 2
    nxt = (i + 1) * n - (i + 1) * (i + 2) // 2
    i = np.where(k >= nxt, i + 1, i)
    start = i * n - i * (i + 1) // 2
    return i, i + 1 + (k - start)

