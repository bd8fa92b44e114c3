"""The one pixel convention at the metric boundary, checked.

Every metric takes images as uint8 in 0..255 or floats in [0, 1] (``data_range`` for PSNR and
SSIM). A float outside that range is refused with one line: an array in [-1, 1] (the networks'
range) would otherwise give a wrong but finite number. ``coopnets.images.to_unit`` converts
network outputs; ``coopnets.images.to_uint8`` rounds them as saved PNGs would be.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError

TOLERANCE = 1e-6  # float rounding at the ends of the range


def unit_pixels(images, name: str = "images", data_range: float = 1.0,
                dtype=torch.float64) -> torch.Tensor:
    """A tensor of ``dtype`` in [0, data_range]: uint8 scaled by data_range / 255, floats checked
    to lie in [0, data_range] already. Any layout; the shape is kept."""
    t = images.detach() if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    if t.dtype == torch.uint8:
        return t.to(dtype) * (data_range / 255.0)
    if not t.is_floating_point():
        raise UserError(f"{name}: expected uint8 pixels or floats in [0, {data_range:g}], got {t.dtype}")
    if t.numel() == 0:
        raise UserError(f"{name}: is empty")
    t = t.to(dtype)
    if not torch.isfinite(t).all():
        raise UserError(f"{name}: contains NaN or inf")
    lo, hi = float(t.min()), float(t.max())
    if lo < -TOLERANCE or hi > data_range + TOLERANCE:
        hint = (" (network outputs in [-1, 1]: convert them with coopnets.images.to_unit or "
                "to_uint8)" if lo < 0 else "")
        raise UserError(f"{name}: float pixels must lie in [0, {data_range:g}], got values in "
                        f"[{lo:.3g}, {hi:.3g}]{hint}")
    return t
