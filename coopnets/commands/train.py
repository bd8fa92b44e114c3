"""Train a model; running the same command again resumes the run.

Every config field is an option (``--des-steps 30``); ``--preset`` picks a set of them and
``--config run/config.json`` repeats a run exactly.
"""
from __future__ import annotations

from dataclasses import fields

from ..config import RENAMED, Config, parse_value, resolve

FIELDS = {f.name: f for f in fields(Config)}
OLD_FLAGS = {new: "--" + old.replace("_", "-") for old, new in RENAMED.items()}


def add_arguments(p) -> None:
    p.description = ("Train a model. Every config field is an option (--des-steps 30); running "
                     "the same command again resumes the run.")
    p.add_argument("--config", help="a saved config.json to repeat a run exactly")
    p.add_argument("--run-dir", help="use (or resume) this run folder instead of a numbered one")
    p.add_argument("--new-run", action="store_true", help="start a new numbered run even if one matches")
    for f in fields(Config):
        flags = ["--" + f.name.replace("_", "-")] + ([OLD_FLAGS[f.name]] if f.name in OLD_FLAGS else [])
        p.add_argument(*flags, dest=f.name, default=None, metavar=str(f.type).upper(),
                       help=f"default {f.default!r}")


def run(args) -> int:
    overrides = {k: parse_value(FIELDS[k], v) for k, v in vars(args).items()
                 if k in FIELDS and k != "preset" and v is not None}
    cfg = resolve(args.preset, args.config, **overrides)  # bad options fail before torch loads
    from .. import distributed
    from ..training import train
    try:
        run_dir = train(cfg, args.run_dir, args.new_run)
        main = distributed.is_main()
    finally:
        distributed.shutdown()  # leave a torchrun process group cleanly
    if main:
        print(f"run folder: {run_dir}")
    return 0
