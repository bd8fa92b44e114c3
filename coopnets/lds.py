"""The linear dynamical system (LDS) dynamic-texture baseline (Doretto, Chiuso, Wu, Soatto,
"Dynamic textures", IJCV 2003): the classic model Table 5 compares CoopNets with.

    y_t = ȳ + C x_t,     x_{t+1} = A x_t + B v_t,     v_t ~ N(0, I)

Fitting (the paper's closed-form, suboptimal "N4SID-like" solution): stack the frames as
columns Y (D, T), subtract the mean frame ȳ, take the SVD Y − ȳ = U S Vᵀ and keep n
components: C = U_n, X = S_n V_nᵀ (the states x_1..x_T). The transition is the least-squares
A = X_{2:T} X_{1:T-1}⁺; the residuals W = X_{2:T} − A X_{1:T-1} give Q = W Wᵀ / (T − 1) and
B = its square root (of rank n_v). Synthesis starts from the first observed state x_1 and
drives the system with noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError


@dataclass
class LDS:
    mean: np.ndarray  # ȳ (D,)
    C: np.ndarray  # (D, n) observation matrix, orthonormal columns
    A: np.ndarray  # (n, n) state transition
    B: np.ndarray  # (n, n_v) noise input
    x0: np.ndarray  # (n,) the first state of the fitted sequence
    shape: tuple  # (C, H, W) of one frame

    def synthesize(self, frames: int, seed: int = 0, noise: bool = True) -> np.ndarray:
        """A video (C, T, H, W) of ``frames`` frames in the fitted pixel units (not clipped)."""
        rng = np.random.default_rng(seed)
        x, out = self.x0.copy(), []
        for _ in range(frames):
            out.append(self.mean + self.C @ x)
            x = self.A @ x + (self.B @ rng.standard_normal(self.B.shape[1]) if noise else 0.0)
        y = np.stack(out, 1)  # (D, T)
        c, h, w = self.shape
        return y.reshape(c, h, w, frames).transpose(0, 3, 1, 2)

    def spectral_radius(self) -> float:
        return float(np.abs(np.linalg.eigvals(self.A)).max()) if self.A.size else 0.0


def fit_lds(video, n: int = 20, n_noise: int | None = None) -> LDS:
    """Fit an LDS with ``n`` states (and a noise of rank ``n_noise``, default n) to a video
    (C, T, H, W): a uint8 or float array/tensor; pixels are used as they are given."""
    v = video.detach().cpu().double().numpy() if isinstance(video, torch.Tensor) else np.asarray(video, np.float64)
    if v.ndim != 4:
        raise UserError(f"fit_lds takes one video (C, T, H, W), got shape {v.shape}")
    c, t, h, w = v.shape
    if t < 3:
        raise UserError(f"fit_lds needs at least 3 frames, got {t}")
    n = min(n, t - 1)
    n_noise = min(n_noise or n, n)
    y = v.transpose(0, 2, 3, 1).reshape(c * h * w, t)  # columns are frames
    mean = y.mean(1)
    u, s, vt = np.linalg.svd(y - mean[:, None], full_matrices=False)
    C, X = u[:, :n], s[:n, None] * vt[:n]  # X (n, T)
    A = X[:, 1:] @ np.linalg.pinv(X[:, :-1])
    W = X[:, 1:] - A @ X[:, :-1]
    Q = W @ W.T / (t - 1)
    ev, evec = np.linalg.eigh(Q)
    order = np.argsort(ev)[::-1][:n_noise]
    B = evec[:, order] * np.sqrt(np.clip(ev[order], 0, None))
    return LDS(mean, C, A, B, X[:, 0].copy(), (c, h, w))
