"""Does a preset survive its schedule? Train one run per configuration and print, side by side,
whether and when each diverged, with the spread of f(data) − f(syn) and of the Langevin move.

    python benchmarks/bench_stability.py --preset texture-cpu --data brick.png --steps 2000 \
        --try "des_gap_limit=0" "des_gap_limit=0 init=paper" "" "des_gap_limit=0.03"

("" is the preset as it stands, with the default --des-gap-limit 0.1; des_gap_limit=0 is the
paper's loss.)

Each --try is a space-separated list of config overrides (FIELD=VALUE); ``init=paper`` is not a
config field: it re-initialises the networks as the released TF code does (conv weights
N(0, 0.01²), transposed-conv weights N(0, 0.005²), zero biases).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import coopnets.training as training  # noqa: E402
from coopnets.config import resolve  # noqa: E402
from coopnets.errors import TrainingDiverged  # noqa: E402
from common import config_overrides  # noqa: E402


def paper_init(build):
    def built(cfg, channels):
        des, gen = build(cfg, channels)
        for net, std in ((des, 0.01), (gen, 0.005)):
            for m in net.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d,
                                  nn.Linear)):
                    nn.init.normal_(m.weight, 0.0, std)
                    nn.init.zeros_(m.bias)
        return des, gen
    return built


def one(preset, data, steps, overrides: str, outdir: Path) -> dict:
    items = overrides.split()
    init = next((i.split("=", 1)[1] for i in items if i.startswith("init=")), "torch")
    kw = config_overrides([i for i in items if not i.startswith("init=")])
    cfg = resolve(preset, data=data, steps=steps, outdir=str(outdir), progress=False, **kw)
    build = training.build_nets
    training.build_nets = paper_init(build) if init == "paper" else build
    t0, outcome = time.time(), "ran its schedule"
    try:
        run = training.train(cfg, new_run=True)
    except TrainingDiverged as e:
        outcome = str(e).split(";")[0].replace("training ", "")
        run = sorted(outdir.glob("0*"))[-1]
    finally:
        training.build_nets = build
    rows = [json.loads(line) for line in open(run / "stats.jsonl")]
    gap = np.abs([r.get("f_gap", np.nan) for r in rows])
    move = np.array([r.get("langevin_move", np.nan) for r in rows])
    return dict(config=overrides or "(preset)", outcome=outcome, gap=gap, move=move,
                minutes=(time.time() - t0) / 60, run=str(run))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="texture-cpu")
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--try", dest="tries", nargs="+", default=[""])
    p.add_argument("--outdir", default="runs/bench-stability")
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        print(f"skipped: {args.data} does not exist")
        return 0
    print(f"| {args.preset}, {args.steps} steps | outcome | median / max abs(f_gap) | "
          "median / max move | minutes |")
    print("|---|---|---|---|---|")
    for i, overrides in enumerate(args.tries):
        r = one(args.preset, args.data, args.steps, overrides, Path(args.outdir) / f"try{i}")
        print(f"| {r['config']} | {r['outcome']} | {np.nanmedian(r['gap']):.3g} / "
              f"{np.nanmax(r['gap']):.3g} | {np.nanmedian(r['move']):.3g} / "
              f"{np.nanmax(r['move']):.3g} | {r['minutes']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
