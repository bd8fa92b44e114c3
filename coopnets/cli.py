"""``coopnets`` command line: train, sample, eval, complete, interpolate, presets.

User errors print one line and exit 2; a diverged run exits 3; nothing prints a traceback
unless it is a bug.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from .config import PRESETS, Config, parse_value, resolve
from .errors import TrainingDiverged, UserError

FIELDS = {f.name: f for f in fields(Config)}


def _add_train(sub):
    p = sub.add_parser("train", help="train CoopNets / Algorithm D / Algorithm G; resumes when run again",
                       description="Train a model. Every config field is an option (--des-steps 30); "
                                   "running the same command again resumes the run.")
    p.add_argument("--config", help="a saved config.json to repeat a run exactly")
    p.add_argument("--run-dir", help="use (or resume) this run folder instead of a numbered one")
    p.add_argument("--new-run", action="store_true", help="start a new numbered run even if one matches")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, default=None, metavar=f.type.upper() if isinstance(f.type, str) else "V",
                       help=f"default {f.default!r}")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .training import train
    overrides = {k: parse_value(FIELDS[k], v) for k, v in vars(args).items()
                 if k in FIELDS and k != "preset" and v is not None}
    cfg = resolve(args.preset, args.config, **overrides)
    run_dir = train(cfg, args.run_dir, args.new_run)
    print(f"run folder: {run_dir}")
    return 0


def _add_sample(sub):
    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("run", help="run folder or checkpoint file")
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
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    import numpy as np

    from .checkpoint import find_checkpoint
    from .images import save_grid, save_images, to_uint8
    from .sampling import generate
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


def _add_presets(sub):
    p = sub.add_parser("presets", help="list the presets and what they set")
    p.set_defaults(func=lambda args: print("\n".join(
        f"{name:15s} {' '.join(f'{k}={v}' for k, v in PRESETS[name].items())}" for name in PRESETS)) or 0)


def _add_optional(sub, name, module, help_text):
    """Subcommands whose implementation lives in its own module."""
    import importlib
    try:
        mod = importlib.import_module(f"coopnets.{module}")
    except ImportError:
        return
    p = sub.add_parser(name, help=help_text)
    mod.add_arguments(p)
    p.set_defaults(func=mod.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coopnets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sample(sub)
    _add_optional(sub, "eval", "evaluate", "evaluate samples or a run: FID, KID, IS, Parzen, PSNR, SSIM")
    _add_optional(sub, "complete", "completion", "complete occluded images with a trained run")
    _add_optional(sub, "interpolate", "interpolation", "interpolate between latent vectors or images")
    _add_optional(sub, "demo", "demo", "train stationary CoopNets on the bundled texture (2 CPU minutes)")
    _add_presets(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"coopnets: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"coopnets: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("coopnets: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
