"""Latent interpolation (Fig. 6): decode points on the path between two latent vectors.

    latent_path(z0, z1, steps, mode)           the latents of each row, ends included
    interpolate(gen, z0, z1, steps, ...)       the decoded rows, optionally revised
    endpoint_latents(rows, shape, seed)        seeded random ends
    infer_endpoints(gen, images, ...)          the latents of two given images

Each row starts at one latent vector and ends at another; ``linear`` moves on the straight
line, ``slerp`` on the great circle (norms stay near √d, where N(0, I) puts its mass).
Revision runs l_D descriptor Langevin steps on every decoded image (the CoopNets sample),
with the same noise along a row so the row stays a smooth path. Ends given as images are
first inferred (completion's inference with nothing occluded).
"""
from __future__ import annotations


import torch

from .errors import UserError
from .langevin import revise
from .seeding import ExampleRNG, stream_seed

MODES = ("linear", "slerp")


def latent_path(z0: torch.Tensor, z1: torch.Tensor, steps: int, mode: str = "linear") -> torch.Tensor:
    """``steps`` points from z0 to z1, both ends included (and equal to z0, z1 exactly).

    z0, z1: (B, *S) batches of latents -> (B, steps, *S); a single vector (D,) -> (steps, D).

    slerp(t) = sin((1 − t) ω) / sin ω · z0 + sin(t ω) / sin ω · z1,  cos ω = <z0, z1> / (|z0| |z1|),
    falling back to the straight line where ω is too small for the division.
    """
    if mode not in MODES:
        raise UserError(f"--mode must be linear or slerp, got {mode!r}")
    if steps < 2:
        raise UserError(f"--steps must be at least 2 (the two ends), got {steps}")
    if z0.shape != z1.shape:
        raise ValueError(f"latents have different shapes {tuple(z0.shape)} and {tuple(z1.shape)}")
    squeeze = z0.dim() == 1
    if squeeze:
        z0, z1 = z0[None], z1[None]
    b, shape = len(z0), z0.shape[1:]
    a, c = z0.reshape(b, 1, -1).double(), z1.reshape(b, 1, -1).double()  # (B, 1, D)
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device=z0.device).view(1, -1, 1)
    if mode == "linear":
        path = (1 - t) * a + t * c
    else:
        cos = (a * c).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * c.norm(dim=-1, keepdim=True))
        omega = torch.arccos(cos.clamp(-1.0, 1.0))  # (B, 1, 1)
        so = torch.sin(omega)
        small = so < 1e-6
        so = torch.where(small, torch.ones_like(so), so)
        w0 = torch.where(small, 1 - t, torch.sin((1 - t) * omega) / so)
        w1 = torch.where(small, t, torch.sin(t * omega) / so)
        path = w0 * a + w1 * c
    path = path.to(z0.dtype).reshape(b, steps, *shape)
    path[:, 0], path[:, -1] = z0, z1  # the ends are the given vectors exactly
    return path[0] if squeeze else path


def endpoint_latents(rows: int, latent_shape: tuple, seed: int, device="cpu") -> tuple:
    """z0, z1 (rows, *latent_shape): row r's ends are latents 2r and 2r + 1 of ``seed``."""
    z = ExampleRNG(seed, range(2 * rows), device).randn((2 * rows, *latent_shape))
    return z[0::2], z[1::2]


def infer_endpoints(gen, images: torch.Tensor, *, residual_std: float, step_size: float,
                    steps: int = 300, restarts: int = 4, seed: int = 0) -> tuple:
    """(z0, z1) of two images (2, C, H, W) in [-1, 1], inferred from all their pixels."""
    from .completion import infer_latent
    size = images.shape[-1]
    z, _ = infer_latent(gen, images, torch.ones(2, 1, size, size, device=images.device),
                        residual_std=residual_std, steps=steps, step_size=step_size,
                        restarts=restarts, seed=seed, latent_shape=gen.latent_shape(size))
    return z[:1], z[1:]


def interpolate(gen, z0: torch.Tensor, z1: torch.Tensor, steps: int = 8, mode: str = "linear", *,
                descriptor=None, revise_steps: int = 0, ref_std: float = 0.016,
                step_size: float = 0.002, noise: bool = True, seed: int = 0) -> torch.Tensor:
    """Decoded rows (R, steps, C, H, W) between latents z0 and z1 (R, *latent_shape); nets in
    eval mode. With a ``descriptor`` and ``revise_steps`` > 0 every image is revised by
    descriptor Langevin (s = ``ref_std``, δ = ``step_size``), one noise stream per row."""
    rows, latent_shape = len(z0), z0.shape[1:]
    z = latent_path(z0, z1, steps, mode).reshape(rows * steps, *latent_shape)
    with torch.no_grad():
        x = gen(z).float()  # (rows * steps, C, H, W)
    if descriptor is not None and revise_steps > 0:
        rng = ExampleRNG(stream_seed(seed, "interpolation_revision"),
                         [r for r in range(rows) for _ in range(steps)], x.device)
        x = revise(descriptor, x, ref_std=ref_std, steps=revise_steps, step_size=step_size,
                   noise=noise, rng=rng)
    return x.view(rows, steps, *x.shape[1:])
