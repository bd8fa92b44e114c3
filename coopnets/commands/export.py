"""``coopnets export RUN --out DIR``: a run as a folder to share (safetensors weights,
config.json, a README.md model card) that ``coopnets sample DIR`` and ``coopnets.load``
read without running any pickled code; see ``coopnets.export``."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``coopnets export``."""
    p.description = ("Export a trained run as descriptor.safetensors, generator.safetensors, "
                     "config.json and a README.md model card.")
    p.add_argument("run", help="run folder, checkpoint file or export folder")
    p.add_argument("--out", required=True, help="folder to write (created if needed)")


def run(args) -> int:
    """Entry point of ``coopnets export``; returns the exit code."""
    from ..export import export_run
    out = export_run(args.run, args.out)
    print(f"exported {args.run} to {out}; sample it with: coopnets sample {out} -n 64 --out samples.png")
    return 0
