"""``coopnets report RUN [--out FILE]``: one offline HTML page of a run (config, training
curves, sample grids over training, evaluations); see ``coopnets.report``."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``coopnets report``."""
    p.description = ("Write a self-contained HTML report of a run: config, training curves, "
                     "sample grids over training and coopnets eval results (needs matplotlib).")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", default=None, help="HTML file to write (default RUN/report.html)")


def run(args) -> int:
    """Entry point of ``coopnets report``; returns the exit code."""
    from ..report import write_report
    out = write_report(args.run, args.out)
    print(f"wrote the report of {args.run} to {out}")
    return 0
