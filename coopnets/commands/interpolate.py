"""Decode rows of images between pairs of latent vectors (Fig. 6), optionally revised by
descriptor Langevin.

    coopnets interpolate RUN --steps 8 --rows 6                     # seeded random pairs
    coopnets interpolate RUN --steps 8 --between a.png b.png        # between two given images
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def add_arguments(p) -> None:
    p.add_argument("run", help="run folder, checkpoint file or export folder")
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
    p.add_argument("--live-generator", action="store_true",
                   help="a --gen-ema run: use the trained generator, not its moving average")


def run(args) -> int:
    import torch

    from ..checkpoint import find_checkpoint, load_run
    from ..data import load_images
    from ..distributed import pick_device
    from ..images import save_grid, to_float
    from ..interpolation import endpoint_latents, infer_endpoints, interpolate
    if args.rows < 1:
        raise UserError(f"--rows must be positive, got {args.rows}")
    device = pick_device(args.device)
    cfg, des, gen, ckpt = load_run(args.run, device, ema=not args.live_generator)
    if ckpt.get("frames"):
        raise UserError("coopnets interpolate takes image runs; this is a video run (sample it with "
                        "coopnets sample RUN --out video.gif)")
    size, channels = ckpt["image_size"], ckpt["channels"]
    if args.between:
        ends = torch.cat([to_float(load_images(p, kind="texture", image_size=size, channels=channels,
                                               center_crop=args.center_crop)) for p in args.between])
        ends = ends.to(device)
        z0, z1 = infer_endpoints(gen, ends, residual_std=cfg.residual_std,
                                 step_size=cfg.gen_step_size, steps=args.infer_steps,
                                 restarts=args.restarts, seed=args.seed)
    else:
        z0, z1 = endpoint_latents(args.rows, gen.latent_shape(size), args.seed, device)
    k = args.steps
    x = interpolate(gen, z0, z1, k, args.mode, descriptor=des if args.revise else None,
                    revise_steps=cfg.des_steps, ref_std=cfg.ref_std, step_size=cfg.des_step_size,
                    noise=cfg.des_noise_level, seed=args.seed)  # (rows, k, C, H, W)
    ncol = k
    if args.between:  # show the given images at both ends of the row
        x, ncol = torch.cat([ends[:1, None], x, ends[1:, None]], 1), k + 2
    tag = f"{args.mode}{'-revised' if args.revise else ''}"
    out = Path(args.out) if args.out else (
        find_checkpoint(args.run).parent / f"interpolate-{tag}-seed{args.seed}.png")
    save_grid(x.reshape(-1, *x.shape[2:]), out, nrow=ncol)
    what = "between the two images" if args.between else f"{len(z0)} row(s)"
    print(f"wrote {what} of {k} {args.mode} steps{' (revised)' if args.revise else ''} to {out}")
    return 0

