"""Sampling from a trained run, seeded per example: sample i is the same whatever the batch
size (each example draws its latent and its Langevin noise from its own generator).

modes:  gen     x = g(z), one ancestral pass of the generator
        revise  x = g(z), then descriptor Langevin revision (the CoopNets sample; GGCN: the
                hidden-space JKO chains from z, then g)
        des     descriptor Langevin alone, from the reference distribution N(0, s²I)
                (wGCN, wFRAME: JKO chains)
"""
from __future__ import annotations

import sys

import torch
from tqdm.auto import tqdm

from .checkpoint import load_run
from .distributed import pick_device
from .errors import UserError
from .langevin import revise
from .particle import sample_batch as particle_batch
from .seeding import ExampleRNG

PARTICLE = ("wframe", "wgcn", "ggcn")

MODES = ("gen", "revise", "des")


@torch.no_grad()
def _decode(gen, z):
    return gen(z).float()


def sample_batch(des, gen, indices, *, mode, seed, latent_shape, image_shape, ref_std,
                 des_steps, des_step_size, des_noise: bool | float = True, device="cpu") -> torch.Tensor:
    """Samples for the given example indices; nets in eval mode. Returns (B, C, H, W)."""
    rng = ExampleRNG(seed, indices, device)
    if mode in ("gen", "revise"):
        x = _decode(gen, rng.randn((len(indices), *latent_shape)))
    else:
        x = ref_std * rng.randn((len(indices), *image_shape))
    if mode in ("revise", "des") and des_steps > 0:
        x = revise(des, x, ref_std=ref_std, steps=des_steps, step_size=des_step_size,
                   noise=des_noise, rng=rng)
    return x.detach()


def generate(run_or_ckpt, n: int, mode: str = "gen", seed: int = 0, batch_size: int = 100,
             device: str = "auto", des_steps: int | None = None, size: int | None = None,
             start: int = 0, progress: bool = True, frames: int | None = None,
             ema: bool = True) -> torch.Tensor:
    """``n`` samples (indices start..start+n-1) in [-1, 1] as a CPU tensor (n, C, H, W), or
    (n, C, T, H, W) for a video run.

    ``size`` sets the output size of a stationary (texture, video) run, e.g. twice the training
    size, and ``frames`` the length of a video run's samples; ``des_steps`` defaults to the
    run's l_D for ``revise`` and 10 l_D for ``des``. A ``--gen-ema`` run samples with its moving
    average of the generator unless ``ema`` is False (the trained weights).
    """
    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if n <= 0 or batch_size <= 0:
        raise UserError("-n and --batch-size must be positive")
    if size is not None and size <= 0:
        raise UserError(f"--size must be positive, got {size}")
    if des_steps is not None and des_steps < 0:
        raise UserError(f"--des-steps must be >= 0, got {des_steps}")
    dev = pick_device(device)
    cfg, des, gen, ckpt = load_run(run_or_ckpt, dev, ema=ema)
    size = size or ckpt["image_size"]
    if size != ckpt["image_size"] and not gen.stationary:  # non-stationary nets have one size
        raise UserError(f"--size applies to spatially stationary runs (texture, dyntex) only; "
                        f"this run's nets make {ckpt['image_size']}x{ckpt['image_size']} only")
    video_frames = ckpt.get("frames", 0)
    if frames and not video_frames:
        raise UserError("--frames applies to video runs only")
    if video_frames:
        frames = frames or video_frames
        latent_shape, image_shape = gen.latent_shape(size, frames), (ckpt["channels"], frames, size, size)
    else:
        latent_shape, image_shape = gen.latent_shape(size), (ckpt["channels"], size, size)
    steps = des_steps if des_steps is not None else cfg.des_steps * (10 if mode == "des" else 1)
    out = []
    bar = tqdm(total=n, desc=f"sampling ({mode})", unit="img",
               disable=not progress or not sys.stderr.isatty())  # no \r updates in a log file
    for lo in range(start, start + n, batch_size):
        idx = list(range(lo, min(lo + batch_size, start + n)))
        if cfg.algorithm in PARTICLE:  # JKO chains (seed 004, coopnets/particle.py)
            x = particle_batch(des, gen, idx, mode=mode, seed=seed, cfg=cfg,
                               latent_shape=latent_shape, image_shape=image_shape, des_steps=steps)
        else:
            x = sample_batch(des, gen, idx, mode=mode, seed=seed, latent_shape=latent_shape,
                             image_shape=image_shape, ref_std=cfg.ref_std, des_steps=steps,
                             des_step_size=cfg.des_step_size, des_noise=cfg.des_noise_level, device=dev)
        out.append(x.cpu())
        bar.update(len(idx))
    bar.close()
    return torch.cat(out)
