"""Draw samples from a trained run: a PNG grid, one PNG each, or an .npz."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def add_arguments(p) -> None:
    p.add_argument("run", help="run folder, checkpoint file or export folder")
    p.add_argument("-n", "--num", type=int, default=64, help="number of samples")
    p.add_argument("--mode", default="revise", help="gen | revise | des (default revise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--des-steps", type=int, default=None, help="Langevin steps for revise/des")
    p.add_argument("--size", type=int, default=None, help="output size (texture runs: any multiple of 16)")
    p.add_argument("--out", default=None, help="samples.png (grid), a folder (one PNG each) or samples.npz")
    p.add_argument("--format", default=None, help="grid | png | npz (default: from --out)")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row")
    p.add_argument("--device", default="auto")


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
    out = args.out or str(find_checkpoint(args.run).parent / f"sample-{args.mode}-seed{args.seed}.png")
    fmt = args.format or ("npz" if out.endswith(".npz") else "grid" if out.endswith(".png") else "png")
    if fmt not in ("grid", "png", "npz"):
        raise UserError(f"--format must be grid, png or npz, got {fmt!r}")
    x = generate(args.run, args.num, args.mode, args.seed, args.batch_size, args.device,
                 args.des_steps, args.size)
    if fmt == "grid":
        save_grid(x, out, args.nrow)
    elif fmt == "png":
        save_images(x, out)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, samples=to_uint8(x).permute(0, 2, 3, 1).numpy())
    print(f"wrote {args.num} samples ({args.mode}) to {out}")
    return 0
