"""Draw samples from a trained run: a PNG grid, one PNG each, or an .npz (videos: GIF, MP4)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

FORMATS = ("grid", "png", "npz", "gif", "mp4")


def add_arguments(p) -> None:
    p.add_argument("run", help="run folder, checkpoint file or export folder")
    p.add_argument("-n", "--num", type=int, default=64, help="number of samples")
    p.add_argument("--mode", default="revise", help="gen | revise | des (default revise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--des-steps", type=int, default=None, help="Langevin steps for revise/des")
    p.add_argument("--size", type=int, default=None,
                   help="output size (texture runs: any multiple of 16; video runs too)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per video (video runs: any multiple of 4; default as trained)")
    p.add_argument("--fps", type=float, default=12.0, help="frames per second of a GIF/MP4")
    p.add_argument("--out", default=None, help="samples.png (grid), a folder (one PNG each), "
                   "samples.npz, or for video runs samples.gif / samples.mp4 (side by side)")
    p.add_argument("--format", default=None, help=" | ".join(FORMATS) + " (default: from --out)")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row")
    p.add_argument("--device", default="auto")
    p.add_argument("--live-generator", action="store_true",
                   help="a --gen-ema run: sample the trained generator, not its moving average")


def _format(out: str) -> str:
    for ext in ("npz", "gif", "mp4"):
        if out.lower().endswith("." + ext):
            return ext
    return "grid" if out.lower().endswith(".png") else "png"


def check_arguments(args) -> None:
    """Everything that can be refused before the checkpoint is loaded."""
    for flag, value, low in (("-n", args.num, 1), ("--batch-size", args.batch_size, 1),
                             ("--nrow", args.nrow, 1), ("--size", args.size, 1),
                             ("--des-steps", args.des_steps, 0)):
        if value is not None and value < low:
            what = "positive" if low else ">= 0"
            raise UserError(f"{flag} must be {what}, got {value}")
    if args.mode not in ("gen", "revise", "des"):
        raise UserError(f"--mode must be one of gen, revise, des, got {args.mode!r}")


def run(args) -> int:
    check_arguments(args)
    import numpy as np

    from ..checkpoint import find_checkpoint
    from ..images import save_grid, save_images, to_uint8
    from ..sampling import generate
    if args.frames is not None and args.frames <= 0:
        raise UserError(f"--frames must be positive, got {args.frames}")
    default_ext = "gif" if args.frames else "png"
    out = args.out or str(find_checkpoint(args.run).parent
                          / f"sample-{args.mode}-seed{args.seed}.{default_ext}")
    fmt = args.format or _format(out)
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    x = generate(args.run, args.num, args.mode, args.seed, args.batch_size, args.device,
                 args.des_steps, args.size, frames=args.frames, ema=not args.live_generator)
    video = x.dim() == 5
    if video and fmt in ("grid", "png") and args.out is None:  # a video run's default: a GIF
        out, fmt = str(Path(out).with_suffix(".gif")), "gif"
    if fmt in ("gif", "mp4") and not video:
        raise UserError(f"--format {fmt} needs a video run; this run makes images (use .png)")
    if fmt == "npz":
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        u8 = to_uint8(x)
        u8 = u8.permute(0, 2, 3, 4, 1) if video else u8.permute(0, 2, 3, 1)  # (N[,T],H,W,C)
        np.savez_compressed(out, samples=u8.numpy())
    elif fmt in ("gif", "mp4"):
        from ..video import save_gif, save_mp4
        (save_gif if fmt == "gif" else save_mp4)(x, out, args.fps)
    elif video:  # PNG: a strip of frames per video
        from ..video import save_strip
        save_strip(x, out if fmt == "grid" else Path(out) / "strip.png")
    elif fmt == "grid":
        save_grid(x, out, args.nrow)
    else:
        save_images(x, out)
    print(f"wrote {args.num} samples ({args.mode}) to {out}")
    return 0
