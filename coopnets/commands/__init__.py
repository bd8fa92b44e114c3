"""The ``coopnets`` command line: every command in one place.

Each command is a module here with ``add_arguments(parser)`` (options only: nothing heavy is
imported, so ``--help`` answers at once) and ``run(args) -> exit code`` (imports the library
and calls its plain functions). User errors print one line and exit 2; a diverged run exits 3;
nothing prints a traceback unless it is a bug.
"""
from __future__ import annotations

import argparse
import signal
import sys

from ..errors import Interrupted, TrainingDiverged, UserError, signal_name
from . import complete, demo, evaluate, export, interpolate, presets, report, sample, train

COMMANDS = {  # name -> (module, one-line help)
    "train": (train, "train CoopNets / Algorithm D / Algorithm G; resumes when run again"),
    "sample": (sample, "draw samples from a trained run"),
    "eval": (evaluate, "evaluate samples or a run: FID, KID, IS, Parzen, PSNR, SSIM"),
    "complete": (complete, "complete occluded images with a trained run"),
    "interpolate": (interpolate, "interpolate between latent vectors or images"),
    "export": (export, "export a run as safetensors + config.json + model card, to share"),
    "report": (report, "write one offline HTML page of a run: curves, grids, metrics"),
    "demo": (demo, "train stationary CoopNets on the bundled texture (2 CPU minutes)"),
    "presets": (presets, "list the presets and what they set"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coopnets", description="Cooperative learning of a descriptor and a generator "
                                     "(CoopNets), Algorithm D and Algorithm G.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=module.__doc__.strip().splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def _terminate(signum, frame):
    """SIGTERM outside the training loop (which saves first): stop like Ctrl-C does."""
    raise Interrupted(signum, f"stopped by {signal_name(signum)}; run the same command again")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    old = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"coopnets: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"coopnets: {e}", file=sys.stderr)
        return 3
    except Interrupted as e:
        print(f"coopnets: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("coopnets: interrupted (Ctrl-C); run the same command again", file=sys.stderr)
        return 130
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
