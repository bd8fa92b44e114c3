"""Helpers shared by the benchmark scripts: where the shared data lives, which commit the
code is at, and how long a run's training took."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python benchmarks/x.py`` from anywhere
    sys.path.insert(0, str(REPO))


def shared_data() -> Path:
    """``$COOPNETS_SHARED`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("COOPNETS_SHARED", REPO.parent / "shared" / "data"))


def inception_file() -> Path:
    """The Inception TorchScript in the shared data (the package itself only takes paths)."""
    from coopnets.metrics.inception import FILENAME
    return shared_data() / "inception" / FILENAME


def code_version() -> str:
    """The commit the code is at, with "+dirty" when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def config_overrides(items) -> dict:
    """``["FIELD=VALUE", ...]`` (a bench's ``--set``; ``field-name`` works too) as typed config
    overrides; UserError on an unknown field or a value of the wrong type."""
    import dataclasses

    from coopnets.config import Config, parse_value
    from coopnets.errors import UserError
    fields = {f.name: f for f in dataclasses.fields(Config)}
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.replace("-", "_")
        if not eq or key not in fields:
            raise UserError(f"--set takes FIELD=VALUE with a config field, got {item!r}")
        out[key] = parse_value(fields[key], value)
    return out


def parse_set(parser, items) -> dict:
    """``config_overrides`` for a bench's parsed ``--set``, a bad item ending the script with
    argparse's one-line usage error."""
    from coopnets.errors import UserError
    try:
        return config_overrides(items)
    except UserError as e:
        parser.error(str(e))


def training_seconds(run: Path, upto: int | None = None) -> float:
    """Training wall-clock of a run (folder, or a checkpoint file in it) from its stats.jsonl:
    each logged s/it times the steps since the previous record, up to step ``upto``
    (resumed pieces add up; start-up excluded)."""
    total, last = 0.0, 0
    run = Path(run)
    path = (run.parent if run.is_file() else run) / "stats.jsonl"
    if not path.is_file():
        return float("nan")
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "sec_per_it" in rec and "step" in rec and (upto is None or rec["step"] <= upto):
            total += rec["sec_per_it"] * max(rec["step"] - last, 0)
            last = rec["step"]
    return total


FACE_TRAIN = "0:9000"  # CelebA subset faces used for training; 9000:10000 are held out


def face_run(args, new_run: bool = False) -> Path:
    """The face model that bench_faces.py and bench_completion_faces.py share: ``args.run`` if
    given, else the preset celeba-64-cpu trained (or resumed) on faces 0:9000 of ``args.data``
    for ``args.steps`` steps (default: the preset's)."""
    if args.run:
        return Path(args.run)
    import time

    from coopnets.config import resolve
    from coopnets.training import train
    over = {"steps": args.steps} if args.steps else {}
    cfg = resolve("celeba-64-cpu", data=str(args.data), subset=FACE_TRAIN, outdir=args.outdir,
                  progress=args.progress, **over)
    t0 = time.perf_counter()
    run = train(cfg, new_run=new_run)
    print(f"trained {run} in {(time.perf_counter() - t0) / 60:.1f} min ({cfg.steps} steps)")
    return run


def equal_compute_steps(names, given: dict, seconds_per_step, budget_min: float,
                        minimum: int = 1) -> dict:
    """Steps per model for one wall-clock budget: ``given[name]`` where set, else the budget
    over ``seconds_per_step(name)`` measured on this machine; prints the rates and the
    ``--steps-NAME`` flags that repeat the allocation exactly."""
    steps = {}
    for name in names:
        if given.get(name):
            steps[name] = given[name]
        else:
            sps = seconds_per_step(name)
            steps[name] = max(minimum, int(budget_min * 60 / sps))
            print(f"{name}: {sps:.3f} s/step -> {steps[name]} steps in {budget_min} min", flush=True)
    print("repeat exactly with: " + " ".join(f"--steps-{n} {steps[n]}" for n in names))
    return steps
