"""PSNR and SSIM of synthesized dynamic textures against the observed video (Table 5).

The paper (Exp. 7, Table 5) reports "PSNR and SSIM" of the models' syntheses on 6 dynamic
textures without saying how the frames are paired. The protocol here, stated in
docs/results.md: frame t of a synthesis is compared with frame t of the observed clip, at the
observed clip's size and length, pixels in [0, 1]; PSNR and SSIM (``image_quality``, Wang
et al. 2004) are averaged over the frames, then over the syntheses of a clip, then over the
clips. Videos are uint8 (or floats in [0, 1]) of shape (C, T, H, W) or (N, C, T, H, W).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .image_quality import psnr, ssim


def _frames(v, name: str) -> torch.Tensor:
    """(C, T, H, W) -> (T, C, H, W) frames, as the image metrics take them."""
    t = torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v.cpu()
    if t.dim() != 4:
        raise UserError(f"{name}: expected one video (C, T, H, W), got shape {tuple(t.shape)}")
    return t.transpose(0, 1)


def video_scores(syntheses, observed) -> dict:
    """{"psnr", "ssim"} of each synthesis against ``observed`` (frame t with frame t), each the
    mean over frames; returned as float64 arrays (N,)."""
    obs = _frames(observed, "observed video")
    syn = syntheses if syntheses.dim() == 5 else syntheses[None]
    if tuple(syn.shape[1:]) != tuple(observed.shape):
        raise UserError(f"syntheses {tuple(syn.shape[1:])} and the observed video "
                        f"{tuple(observed.shape)} must have the same (C, T, H, W)")
    p = [float(np.mean(psnr(_frames(s, "synthesis"), obs, reduction="none"))) for s in syn]
    q = [ssim(_frames(s, "synthesis"), obs) for s in syn]
    return {"psnr": np.array(p), "ssim": np.array(q)}
