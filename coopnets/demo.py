"""``coopnets demo``: stationary CoopNets (Exp 1, Fig. 1) on the bundled brick texture.

Trains the ``texture-cpu`` preset (two to three minutes on 2 CPU cores) and writes
  observed.png        the training image
  synthesized.png     a grid of synthesized textures (generator + descriptor revision)
  synthesized-2x.png  one synthesis twice the size of the training image
"""
from __future__ import annotations

import time
from pathlib import Path

from .config import resolve
from .data import asset, load_images
from .images import save_grid, to_float
from .sampling import generate
from .training import train


def run_demo(out="demo", steps: int | None = None, data=None) -> Path:
    """Train texture-cpu on ``data`` (default the bundled brick) and write the three pictures
    into ``out``; returns the run folder."""
    t0 = time.time()
    out = Path(out)
    data = data or asset("brick.png")
    overrides = {"steps": steps} if steps is not None else {}
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
    return run_dir
