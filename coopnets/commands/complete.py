"""Complete occluded images with a trained run (Exp 6): infer z from the visible pixels, fill
the rest with g(z). Writes original.png, occluded.png, recovered.png and metrics.json.

    coopnets complete RUN --input faces/ --mask m30      # -> RUN/completion-m30/*.png
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import UserError


def _finite(values) -> list:
    """Values for JSON: NaN/inf (nothing occluded, identical images) become null."""
    return [v if math.isfinite(v) else None for v in values.tolist()]


def add_arguments(p) -> None:
    p.description = ("Complete occluded images with a trained run (Exp 6): infer z from the "
                     "visible pixels, fill the rest with g(z). Writes original.png, "
                     "occluded.png, recovered.png and metrics.json.")
    p.add_argument("run", help="run folder, checkpoint file or export folder")
    p.add_argument("--input", required=True, help="images: folder, zip, .npz/.npy or one image file")
    p.add_argument("--mask", required=True, help="m30 | m40 | m50 (random square block of that area), center, "
                   "pixels:F (a random fraction F of pixels), or a mask image (white = visible)")
    p.add_argument("--out", default=None, help="output folder (default RUN/completion-MASK)")
    p.add_argument("--num", type=int, default=0, help="complete the first N images (0: all)")
    p.add_argument("--steps", type=int, default=300, help="Langevin steps of z per restart")
    p.add_argument("--restarts", type=int, default=4, help="random starts of z; best fit kept")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="descriptor Langevin steps on the occluded pixels afterwards")
    p.add_argument("--step-size", type=float, default=None, help="δ for z (default: the run's)")
    p.add_argument("--residual-std", "--sigma", type=float, default=None,
                   help="σ, std of the generator residual (default: the run's)")
    p.add_argument("--no-noise", action="store_true", help="gradient ascent instead of Langevin")
    p.add_argument("--fixed-step", action="store_true",
                   help="use --step-size as is (default: capped per image by the curvature)")
    p.add_argument("--seed", type=int, default=0, help="seeds the masks and the inference")
    p.add_argument("--center-crop", action="store_true", help="centre-crop inputs before resizing")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default="auto")


def run(args) -> int:
    from ..checkpoint import find_checkpoint, load_run
    from ..completion import complete_images, format_table
    from ..data import load_images
    from ..distributed import pick_device
    from ..images import save_grid
    from ..masks import parse_mask
    if args.num < 0 or args.batch_size <= 0:
        raise UserError("--num must be >= 0 and --batch-size positive")
    device = pick_device(args.device)
    cfg, des, gen, ckpt = load_run(args.run, device)
    if ckpt.get("frames"):
        raise UserError("coopnets complete takes image runs; this is a video run (sample it with "
                        "coopnets sample RUN --out video.gif)")
    size, channels = ckpt["image_size"], ckpt["channels"]
    images = load_images(args.input, image_size=size, center_crop=args.center_crop,
                         channels=channels)  # (N, C, size, size) uint8
    if args.num:
        if args.num > len(images):
            raise UserError(f"--num {args.num} but {args.input} holds {len(images)} images")
        images = images[: args.num]
    masks = parse_mask(args.mask, size, len(images), args.seed)  # (N, 1, H, W)
    res = complete_images(des, gen, cfg, images, masks, steps=args.steps, restarts=args.restarts,
                          refine_steps=args.refine_steps, seed=args.seed,
                          step_size=args.step_size, residual_std=args.residual_std, noise=not args.no_noise,
                          adapt_step=not args.fixed_step, batch_size=args.batch_size,
                          device=device)
    name = Path(args.mask).stem if Path(args.mask).is_file() else args.mask.lower()
    tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    out = Path(args.out) if args.out else find_checkpoint(args.run).parent / f"completion-{tag}"
    for name in ("original", "occluded", "recovered"):
        save_grid(res[name], out / f"{name}.png")
    table = format_table(res["error"], res["psnr"])
    (out / "metrics.json").write_text(json.dumps({
        "mask": args.mask, "seed": args.seed, "steps": args.steps, "restarts": args.restarts,
        "refine_steps": args.refine_steps, "error": _finite(res["error"]),
        "psnr": _finite(res["psnr"])}, indent=1) + "\n")
    print(table)
    print(f"recovery error = mean |x - x̂| over occluded pixels, PSNR over the whole image "
          f"(pixels in [0, 1]); wrote original.png, occluded.png, recovered.png to {out}")
    return 0
