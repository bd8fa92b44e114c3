"""``coopnets demo``: stationary CoopNets (Exp 1, Fig. 1) on the bundled brick texture.

Trains the ``texture-cpu`` preset (about two minutes on 2 CPU cores) and writes
  observed.png        the training image
  synthesized.png     a grid of synthesized textures (generator + descriptor revision)
  synthesized-2x.png  one synthesis twice the size of the training image
"""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from .config import resolve
from .data import load_images
from .images import save_grid, to_float
from .sampling import generate
from .training import train


def asset(name: str) -> str:
    """Path of a file bundled with coopnets (see coopnets/assets/LICENSE.md)."""
    return str(resources.files("coopnets") / "assets" / name)


def add_arguments(p) -> None:
    p.add_argument("--out", default="demo", help="folder for the pictures and the run (default demo/)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--data", default=None, help="another texture image instead of the bundled brick")


def run(args) -> int:
    t0 = time.time()
    out = Path(args.out)
    data = args.data or asset("brick.png")
    overrides = {"steps": args.steps} if args.steps else {}
    cfg = resolve("texture-cpu", data=data, outdir=str(out / "runs"), **overrides)
    observed = load_images(data, "texture", cfg.image_size, cfg.center_crop, cfg.channels)
    save_grid(to_float(observed), out / "observed.png", nrow=1)
    run_dir = train(cfg)
    print(f"trained in {time.time() - t0:.0f} s; sampling")
    save_grid(generate(run_dir, 9, "revise", seed=0, progress=False), out / "synthesized.png", nrow=3)
    big = 2 * observed.shape[-1]
    save_grid(generate(run_dir, 1, "revise", seed=1, size=big, progress=False),
              out / "synthesized-2x.png", nrow=1)
    print(f"wrote {out}/observed.png, synthesized.png, synthesized-2x.png ({big}x{big}) "
          f"in {time.time() - t0:.0f} s; run folder {run_dir}")
    return 0
