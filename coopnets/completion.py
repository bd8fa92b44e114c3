"""Pattern completion with a trained CoopNets run (Exp 6, Table 4; Fig. 9).

The generator learned from fully observed images is asked to explain only the visible pixels
of an occluded image: z is inferred by Langevin dynamics (or plain gradient ascent) on

    log p(z | x_visible) = −||M ⊙ (x − g(z))||² / (2σ²) − ||z||² / 2 + const     (M: 1 = visible)

from several random starts, keeping per image the start whose g(z) fits the visible pixels
best. The occluded pixels are then taken from g(z), optionally refined by descriptor Langevin
with the visible pixels clamped, and the visible pixels are pasted back unchanged.

    coopnets complete RUN --input faces/ --mask m30      # -> RUN/completion-m30/*.png

Videos (N, C, T, H, W) go through the same functions (Exp 7 nets): the video generator's latent
has a time axis, so z is inferred from the visible pixels of every frame, and a missing frame
(``--mask frames:0.25``) is filled by g(z) from the latent cells its neighbours pinned down.

    coopnets complete RUN --input clip.gif --mask frames:0.25   # -> RUN/completion-frames_0.25/

Every random number of image i comes from generators seeded by (seed, i), so the result for
an image does not depend on the batch it is completed in.
"""
from __future__ import annotations

import math

import torch

from .errors import UserError
from .langevin import generator_log_posterior, langevin, revise
from .seeding import REFINEMENT, RESTART, ExampleRNG, sub_seed

from .metrics.image_quality import psnr as _psnr
from .metrics.image_quality import recovery_error as _recovery_error


# ---- metrics (pixels in [0, 1]), per image, from the metrics module -------------------------
def _frames_as_rows(x: torch.Tensor) -> torch.Tensor:
    """Videos (N, C, T, H, W) -> (N, C, T·H, W): the frames stacked as one tall image, so the
    image metrics (per-image means over all pixels) become per-video means. Images pass."""
    return x.flatten(2, 3) if x.dim() == 5 else x


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / MSE) in dB over the whole image (video: all its frames), per image of
    (N, C, H, W) or (N, C, T, H, W) in [0, 1]."""
    return torch.as_tensor(_psnr(_frames_as_rows(a), _frames_as_rows(b), reduction="none"),
                           dtype=torch.float64)


def recovery_error_per_image(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the occluded pixels (mask 0), per image; NaN where nothing is
    occluded. ``a``, ``b``: (N, C, H, W) or (N, C, T, H, W) in [0, 1]; ``mask``: (N, 1, H, W)
    or (N, 1, T, H, W)."""
    mask = _frames_as_rows(mask.expand(len(a), 1, *a.shape[2:]))
    a, b = _frames_as_rows(a), _frames_as_rows(b)
    out = torch.full((len(a),), math.nan, dtype=torch.float64)
    for i in range(len(a)):
        if bool((mask[i] == 0).any()):
            out[i] = _recovery_error(a[i:i + 1], b[i:i + 1], mask[i:i + 1])
    return out


def missing_frame_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR over the frames that are wholly occluded (mask 0 on every pixel), per video of
    (N, C, T, H, W) in [0, 1]; NaN for a video with no missing frame."""
    missing = (mask.expand(len(a), 1, *a.shape[2:]) == 0).flatten(3).all(3)[:, 0]  # (N, T)
    out = torch.full((len(a),), math.nan, dtype=torch.float64)
    for i in range(len(a)):
        if bool(missing[i].any()):
            out[i] = float(psnr_per_image(a[i:i + 1, :, missing[i]], b[i:i + 1, :, missing[i]])[0])
    return out


# ---- inference and completion --------------------------------------------------------------
def visible_residual(generator, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared residual ||M ⊙ (x − g(z))||² / #visible per image, (B,)."""
    with torch.no_grad():
        r = (x - generator(z).float()) * mask
    visible = mask.expand_as(x).flatten(1).sum(1).clamp_min(1.0)
    return r.flatten(1).pow(2).sum(1) / visible


def posterior_curvature(generator, z: torch.Tensor, mask: torch.Tensor, residual_std: float,
                        iters: int = 10) -> torch.Tensor:
    """Largest eigenvalue of H = Jᵀ M J / σ² + I at z, per example (B,): the Gauss-Newton
    curvature of −log p(z | x), J = ∂g/∂z. Power iteration started from z itself; J v comes
    from differentiating Jᵀu (linear in u) with respect to u. Examples stay independent
    (the nets are in eval mode); only input gradients are taken."""
    def unit(v):
        return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (v.dim() - 1))

    z = z.detach().requires_grad_(True)
    out = generator(z).float()  # (B, C, H, W)
    u = torch.zeros_like(out, requires_grad=True)
    (jt_u,) = torch.autograd.grad(out, z, u, create_graph=True)  # Jᵀu
    v, lam = unit(z.detach()), torch.ones(len(z), device=z.device)
    for _ in range(iters):
        (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)  # J v
        (jtmjv,) = torch.autograd.grad(out, z, jv * mask, retain_graph=True)  # Jᵀ M J v (M² = M)
        w = jtmjv / (residual_std * residual_std) + v
        lam = (w * v).flatten(1).sum(1)  # Rayleigh quotient (v is a unit vector)
        v = unit(w)
    return lam.detach()


def infer_latent(generator, x: torch.Tensor, mask: torch.Tensor, *, residual_std: float, steps: int,
                 step_size: float, restarts: int, seed: int, latent_shape: tuple,
                 noise: bool = True, indices=None,
                 adapt_step: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Infer z from the visible pixels (Exp 6): ``restarts`` Langevin runs of ``steps`` steps on
    the generator posterior restricted to M, each from z ~ N(0, I); per image keep the run with
    the lowest visible-pixel residual. Returns (z (B, *latent_shape), residuals (B,)).

    ``adapt_step``: image i uses δ_i = min(δ, √(2 / λ_i)), λ_i the posterior curvature at its
    start (``posterior_curvature``). The gradient part of a step multiplies the error along
    an eigenvector by 1 − λ δ²/2, which diverges once δ²/2 > 2/λ; δ_i keeps δ_i²/2 ≤ 1/λ_i, a
    factor 2 below that. Done by preconditioning: Langevin with step δ on u = z / s_i is
    Langevin with step s_i δ on z, so the target is unchanged.
    """
    if restarts < 1 or steps < 0:
        raise UserError(f"--restarts must be >= 1 and --steps >= 0, got {restarts} and {steps}")
    indices = list(range(len(x))) if indices is None else list(indices)
    mask = mask.to(x.device, x.dtype).expand(len(x), 1, *x.shape[2:])
    log_post = generator_log_posterior(generator, x, residual_std, mask)
    row = (-1, *[1] * len(latent_shape))
    best_z, best_r = None, None
    for r in range(restarts):
        rng = ExampleRNG(sub_seed(seed, r, RESTART), indices, x.device)  # restart r: its own streams
        z = rng.randn((len(x), *latent_shape))
        s = torch.ones(len(x), device=x.device)
        if adapt_step and steps > 0:
            lam = posterior_curvature(generator, z, mask, residual_std)
            s = (torch.sqrt(2.0 / lam) / step_size).clamp(max=1.0)
        s = s.view(row)
        u = langevin(lambda u: log_post(u * s), z / s, steps, step_size, noise, rng)
        z = u * s
        res = visible_residual(generator, x, z, mask)
        if best_z is None:
            best_z, best_r = z, res
        else:
            better = res < best_r
            best_z = torch.where(better.view(-1, *[1] * (z.dim() - 1)), z, best_z)
            best_r = torch.where(better, res, best_r)
    return best_z, best_r


def refine_occluded(descriptor, x: torch.Tensor, mask: torch.Tensor, *, steps: int, ref_std: float,
                    step_size: float, seed: int, indices=None) -> torch.Tensor:
    """Descriptor Langevin (step D1) on the occluded pixels only: after every step the visible
    pixels are set back to their observed values."""
    indices = list(range(len(x))) if indices is None else list(indices)
    visible = mask.expand_as(x) > 0.5
    rng = ExampleRNG(sub_seed(seed, REFINEMENT, RESTART), indices, x.device)
    y = x
    for _ in range(steps):
        y = revise(descriptor, y, ref_std=ref_std, steps=1, step_size=step_size, rng=rng)
        y = torch.where(visible, x, y)
    return y


def complete(descriptor, generator, x: torch.Tensor, mask: torch.Tensor, *, residual_std: float,
             steps: int, step_size: float, restarts: int, seed: int, refine_steps: int = 0,
             ref_std: float, des_step_size: float, latent_shape: tuple, noise: bool = True,
             indices=None, adapt_step: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Complete occluded images x (B, C, H, W) or videos (B, C, T, H, W) in [-1, 1]; ``mask``
    (1 = visible) broadcasts to (B, 1, H, W) or (B, 1, T, H, W). Nets in eval mode. ``indices`` name the examples for seeding (default 0..B-1).

    1. infer z from the visible pixels (``infer_latent``: restarts, best fit per image, step
       capped per image where δ is too large for the generator's curvature);
    2. fill the occluded pixels with g(z);
    3. optionally ``refine_steps`` descriptor Langevin steps with the visible pixels clamped;
    4. paste the visible pixels back (bit for bit).
    Returns (x_completed, z, visible-pixel residuals (B,)).
    """
    mask = mask.to(x.device, x.dtype).expand(len(x), 1, *x.shape[2:])
    z, residuals = infer_latent(generator, x, mask, residual_std=residual_std, steps=steps,
                                step_size=step_size,
                                restarts=restarts, seed=seed, latent_shape=latent_shape,
                                noise=noise, indices=indices, adapt_step=adapt_step)
    visible = mask.expand_as(x) > 0.5
    with torch.no_grad():
        y = torch.where(visible, x, generator(z).float())
    if refine_steps > 0:
        y = refine_occluded(descriptor, y, mask, steps=refine_steps, ref_std=ref_std,
                            step_size=des_step_size, seed=seed, indices=indices)
    return torch.where(visible, x, y).detach(), z, residuals


def complete_images(des, gen, cfg, images: torch.Tensor, masks: torch.Tensor, *, steps: int,
                    restarts: int, refine_steps: int, seed: int, step_size: float | None = None,
                    residual_std: float | None = None, noise: bool = True, adapt_step: bool = True,
                    batch_size: int = 100, device="cpu") -> dict:
    """Complete uint8 images (N, C, H, W) under masks (N, 1, H, W) in batches; returns a dict of
    float tensors in [-1, 1] (original, occluded, recovered) and per-image metrics. Videos
    (N, C, T, H, W) under masks (N, 1, T, H, W) alike, with the PSNR over the missing frames
    ("psnr_missing", NaN where no frame is wholly occluded) besides."""
    from .images import to_float, to_unit
    video = images.dim() == 5
    latent_shape = (gen.latent_shape(images.shape[-1], images.shape[2]) if video
                    else gen.latent_shape(images.shape[-1]))
    x_all = to_float(images)
    out = []
    for lo in range(0, len(x_all), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(x_all))))
        y, _, _ = complete(des, gen, x_all[idx].to(device), masks[idx].to(device),
                           residual_std=residual_std or cfg.residual_std, steps=steps,
                           step_size=step_size or cfg.gen_step_size, restarts=restarts, seed=seed,
                           refine_steps=refine_steps, ref_std=cfg.ref_std,
                           des_step_size=cfg.des_step_size, latent_shape=latent_shape,
                           noise=noise, indices=idx, adapt_step=adapt_step)
        out.append(y.cpu())
    recovered = torch.cat(out)
    occluded = torch.where(masks.expand_as(x_all) > 0.5, x_all, torch.full_like(x_all, -1.0))
    a, b = to_unit(x_all), to_unit(recovered)
    out = {"original": x_all, "occluded": occluded, "recovered": recovered,
           "error": recovery_error_per_image(a, b, masks), "psnr": psnr_per_image(a, b)}
    if video:
        out["psnr_missing"] = missing_frame_psnr(a, b, masks)
    return out


def format_table(error: torch.Tensor, psnr: torch.Tensor, names=None, psnr_missing=None,
                 label: str = "image") -> str:
    """Per-image (or per-video: ``label``) recovery error and PSNR, and their means (NaN-free
    mean of the error); ``psnr_missing`` (videos) adds the PSNR over the missing frames."""
    names = names or [str(i) for i in range(len(error))]
    extra = psnr_missing is not None
    lines = [f"{label:>8s}  {'error':>8s}  {'PSNR dB':>8s}" + (f"  {'missing dB':>10s}" if extra else "")]
    for i, n in enumerate(names):
        lines.append(f"{n:>8s}  {float(error[i]):8.4f}  {float(psnr[i]):8.3f}"
                     + (f"  {float(psnr_missing[i]):10.3f}" if extra else ""))
    lines.append(f"{'mean':>8s}  {_nanmean(error):8.4f}  {float(psnr.mean()):8.3f}"
                 + (f"  {_nanmean(psnr_missing):10.3f}" if extra else ""))
    return "\n".join(lines)


def _nanmean(t: torch.Tensor) -> float:
    """Mean of the non-NaN values (NaN: nothing occluded / no missing frame), NaN if none."""
    ok = ~torch.isnan(t)
    return float(t[ok].mean()) if ok.any() else math.nan


def _finite(t: torch.Tensor) -> list:
    """Values for JSON: NaN/inf (nothing occluded, identical images) become null."""
    return [v if math.isfinite(v) else None for v in t.tolist()]
