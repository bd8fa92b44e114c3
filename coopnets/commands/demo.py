"""Train stationary CoopNets (Exp 1) on the bundled brick texture, about two minutes on 2 CPU
cores, and write observed.png, synthesized.png and synthesized-2x.png."""
from __future__ import annotations

from ..errors import UserError


def add_arguments(p) -> None:
    p.add_argument("--out", default="demo", help="folder for the pictures and the run (default demo/)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--data", default=None, help="another texture image instead of the bundled brick")


def run(args) -> int:
    from ..demo import run_demo
    if args.steps is not None and args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    run_demo(args.out, args.steps, args.data)
    return 0
