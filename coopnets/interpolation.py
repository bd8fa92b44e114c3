"""Latent interpolation (Fig. 6): decode points on the path between two latent vectors.

    coopnets interpolate RUN --steps 8 --rows 6                     # seeded random pairs
    coopnets interpolate RUN --steps 8 --between a.png b.png        # between two given images

Each row starts at one latent vector and ends at another; ``linear`` moves on the straight
line, ``slerp`` on the great circle (norms stay near √d, where N(0, I) puts its mass).
``--revise`` runs the run's l_D descriptor Langevin steps on every decoded image (the
CoopNets sample), with the same noise along a row so the row stays a smooth path.
``--between`` first infers z of each image (completion's inference with nothing occluded).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError
from .langevin import ExampleRNG, descriptor_log_prob, langevin

MODES = ("linear", "slerp")


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int, mode: str = "linear") -> torch.Tensor:
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


def add_arguments(p) -> None:
    p.description = ("Decode rows of images between pairs of latent vectors (Fig. 6), "
                     "optionally revised by descriptor Langevin.")
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--steps", type=int, default=8, help="images per row, both ends included")
    p.add_argument("--rows", type=int, default=4, help="pairs of random latent vectors")
    p.add_argument("--mode", default="linear", help="linear | slerp")
    p.add_argument("--revise", action="store_true", help="descriptor Langevin revision (l_D steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PNG grid (default RUN/interpolate-MODE-seedS.png)")
    p.add_argument("--between", nargs=2, metavar=("IMG_A", "IMG_B"), default=None,
                   help="interpolate between the inferred latents of two images")
    p.add_argument("--infer-steps", type=int, default=300, help="--between: Langevin steps of z")
    p.add_argument("--restarts", type=int, default=4, help="--between: random starts of z")
    p.add_argument("--center-crop", action="store_true", help="--between: centre-crop the images")
    p.add_argument("--device", default="auto")


def endpoint_latents(rows: int, latent_shape: tuple, seed: int, device="cpu") -> tuple:
    """z0, z1 (rows, *latent_shape): row r's ends are latents 2r and 2r + 1 of ``seed``."""
    z = ExampleRNG(seed, range(2 * rows), device).randn((2 * rows, *latent_shape))
    return z[0::2], z[1::2]


def infer_endpoints(gen, cfg, paths, size, channels, args, device) -> tuple:
    """(images (2, C, H, W) in [-1, 1], z0, z1): z of each image inferred from all its pixels."""
    from .completion import infer_latent
    from .data import load_images
    from .images import to_float
    x = torch.cat([to_float(load_images(p, kind="texture", image_size=size, channels=channels,
                                        center_crop=args.center_crop)) for p in paths]).to(device)
    z, _ = infer_latent(gen, x, torch.ones(2, 1, size, size, device=device), sigma=cfg.gen_refsig,
                        steps=args.infer_steps, step_size=cfg.gen_step_size,
                        restarts=args.restarts, seed=args.seed,
                        latent_shape=gen.latent_shape(size))
    return x, z[:1], z[1:]


def run(args) -> int:
    from .checkpoint import find_checkpoint, load_run
    from .distributed import pick_device
    from .images import save_grid
    if args.rows < 1:
        raise UserError(f"--rows must be positive, got {args.rows}")
    device = pick_device(args.device)
    cfg, des, gen, ckpt = load_run(args.run, device)
    size, channels = ckpt["image_size"], ckpt["channels"]
    latent_shape = gen.latent_shape(size)
    if args.between:
        ends, z0, z1 = infer_endpoints(gen, cfg, args.between, size, channels, args, device)
    else:
        z0, z1 = endpoint_latents(args.rows, latent_shape, args.seed, device)
    rows, k = len(z0), args.steps
    z = interpolate(z0, z1, k, args.mode).reshape(rows * k, *latent_shape)
    with torch.no_grad():
        x = gen(z).float()  # (rows * k, C, H, W)
    if args.revise and cfg.des_steps > 0:
        rng = ExampleRNG(args.seed + 1, [r for r in range(rows) for _ in range(k)], device)
        x = langevin(descriptor_log_prob(des, cfg.des_refsig), x, cfg.des_steps,
                     cfg.des_step_size, cfg.des_noise, rng)
    x, ncol = x.view(rows, k, *x.shape[1:]), k
    if args.between:  # show the given images at both ends of the row
        x, ncol = torch.cat([ends[:1, None], x, ends[1:, None]], 1), k + 2
    tag = f"{args.mode}{'-revised' if args.revise else ''}"
    out = Path(args.out) if args.out else (
        find_checkpoint(args.run).parent / f"interpolate-{tag}-seed{args.seed}.png")
    save_grid(x.reshape(-1, *x.shape[2:]), out, nrow=ncol)
    what = "between the two images" if args.between else f"{rows} row(s)"
    print(f"wrote {what} of {k} {args.mode} steps{' (revised)' if args.revise else ''} to {out}")
    return 0
