"""Complete occluded images with a trained run (Exp 6): infer z from the visible pixels, fill
the rest with g(z). Writes original.png, occluded.png, recovered.png and metrics.json; for a
video run original/occluded/recovered .gif and .png (frame strips).

    coopnets complete RUN --input faces/ --mask m30           # -> RUN/completion-m30/*.png
    coopnets complete VIDEO_RUN --input clip.gif --mask frames:0.25   # missing frames
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
                     "occluded.png, recovered.png and metrics.json; for a video run the same "
                     "as .gif and .png frame strips, e.g. --mask frames:0.25 for missing frames.")
    p.add_argument("run", help="run folder, checkpoint file or export folder")
    p.add_argument("--input", "--data", dest="input", required=True,
                   help="images: folder, zip, .npz/.npy or one image file; for a video run a "
                   "video (.gif/.mp4/..., a folder of frames, .npy/.npz), loaded as the run was")
    p.add_argument("--mask", required=True, help="m30 | m40 | m50 (random square block of that area), center, "
                   "pixels:F (a random fraction F of pixels), or a mask image (white = visible); "
                   "video runs: these in every frame, or frames:F (a random fraction F of the "
                   "frames missing) or frames:A-B (frames A to B missing, from 0)")
    p.add_argument("--frames", type=int, default=0,
                   help="video runs: frames to load (default: the run's --frames)")
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
    p.add_argument("--live-generator", action="store_true",
                   help="a --gen-ema run: use the trained generator, not its moving average")


def run(args) -> int:
    from ..checkpoint import find_checkpoint, load_run
    from ..completion import complete_images, format_table
    from ..distributed import pick_device
    from ..masks import parse_mask
    if args.num < 0 or args.batch_size <= 0 or args.frames < 0:
        raise UserError("--num and --frames must be >= 0 and --batch-size positive")
    device = pick_device(args.device)
    cfg, des, gen, ckpt = load_run(args.run, device, ema=not args.live_generator)
    size, channels, video = ckpt["image_size"], ckpt["channels"], bool(ckpt.get("frames"))
    images = _load(args, cfg, size, channels, video)  # (N, C, [T,] size, size) uint8
    if args.num:
        if args.num > len(images):
            raise UserError(f"--num {args.num} but {args.input} holds {len(images)} "
                            f"{'videos' if video else 'images'}")
        images = images[: args.num]
    frames = images.shape[2] if video else 0
    masks = parse_mask(args.mask, images.shape[-1], len(images), args.seed, frames)  # (N, 1, [T,] H, W)
    res = complete_images(des, gen, cfg, images, masks, steps=args.steps, restarts=args.restarts,
                          refine_steps=args.refine_steps, seed=args.seed,
                          step_size=args.step_size, residual_std=args.residual_std, noise=not args.no_noise,
                          adapt_step=not args.fixed_step, batch_size=args.batch_size,
                          device=device)
    name = Path(args.mask).stem if Path(args.mask).is_file() else args.mask.lower()
    tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    out = Path(args.out) if args.out else find_checkpoint(args.run).parent / f"completion-{tag}"
    written = _save(res, out, video)
    missing = res.get("psnr_missing")
    table = format_table(res["error"], res["psnr"], psnr_missing=missing,
                         label="video" if video else "image")
    (out / "metrics.json").write_text(json.dumps({
        "mask": args.mask, "seed": args.seed, "steps": args.steps, "restarts": args.restarts,
        "refine_steps": args.refine_steps, "error": _finite(res["error"]),
        "psnr": _finite(res["psnr"]),
        **({"psnr_missing_frames": _finite(missing)} if video else {})}, indent=1) + "\n")
    print(table)
    what = "video (all frames)" if video else "image"
    print(f"recovery error = mean |x - x̂| over occluded pixels, PSNR over the whole {what}"
          + (", missing dB = PSNR over the wholly missing frames" if video else "")
          + f" (pixels in [0, 1]); wrote {', '.join(written)} to {out}")
    return 0


def _load(args, cfg, size: int, channels: int, video: bool):
    """The inputs as uint8 (N, C, H, W) images, or for a video run (N, C, T, H, W) videos
    loaded as the run loaded its data: its frame selection, --image-size and centre crop (the
    nets are stationary, so the frames may be larger than the crops it trained on)."""
    from ..data import load_images
    from ..video import is_video_path, load_videos
    if not video:
        if args.frames:
            raise UserError("--frames is for video runs; this run makes images")
        if is_video_path(args.input):
            raise UserError(f"{args.input} is a video but this is an image run; complete videos "
                            "with a run trained on videos (--preset dyntex-cpu)")
        return load_images(args.input, image_size=size, center_crop=args.center_crop,
                           channels=channels)
    return load_videos(args.input, frames=args.frames or cfg.frames, frame_start=cfg.frame_start,
                       frame_stride=cfg.frame_stride, image_size=cfg.image_size or size,
                       center_crop=args.center_crop or cfg.center_crop, channels=channels)


def _save(res: dict, out: Path, video: bool) -> list[str]:
    """original / occluded / recovered: PNG grids, or for videos GIFs and PNG frame strips."""
    names = ("original", "occluded", "recovered")
    if video:
        from ..video import save_video_samples
        for name in names:
            save_video_samples(res[name], out / name)
        return [f"{n}.gif" for n in names] + [f"{n}.png" for n in names]
    from ..images import save_grid
    for name in names:
        save_grid(res[name], out / f"{name}.png")
    return [f"{n}.png" for n in names]
