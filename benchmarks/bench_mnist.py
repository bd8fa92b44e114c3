"""MNIST, Exp 4 / Table 2 of CoopNets (TPAMI 2020): Parzen-window log-likelihood and MNIST FID,
and the ablation of Algorithm D alone, Algorithm G alone and CoopNets at equal compute.

    # Table 2: CoopNets on train[:50000]; Parzen of generator and revised samples
    nice -n 10 .venv/bin/python benchmarks/bench_mnist.py --steps 6000
    .venv/bin/python benchmarks/bench_mnist.py --run runs/00004-coop-mnist-cpu   # score only

    # Ablation: the three algorithms, each given the same training wall-clock
    nice -n 10 .venv/bin/python benchmarks/bench_mnist.py --ablation --budget-min 10 --set lr_final=0.1

Protocol (Goodfellow et al. 2014, as in the paper): 10,000 samples in [0, 1]; the Gaussian
kernel bandwidth is chosen on train[50000:60000] from a log grid; the score is the mean
log-likelihood of the 10,000 test images, in nats, with its standard error. MNIST FID is the
Fréchet distance of our MNIST classifier's features (coopnets/assets/mnist_classifier.pt)
between the samples and the test set; the test set against train[50000:60000] gives 1.27.

Equal compute for the ablation: each algorithm's seconds per step are measured over a short
calibration run on this machine, and its step count is the budget divided by them. The
chosen counts are printed; ``--steps-coop/--steps-descriptor/--steps-abp`` repeat them
exactly. Algorithm D's samples are what it trains with: l_D Langevin steps from the reference
noise N(0, s²I) (``coopnets sample --mode des --des-steps l_D``). Algorithm G infers each
latent with ``--abp-gen-steps`` Langevin steps, warm-started from the example's last latent.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO, code_version, equal_compute_steps, parse_set, shared_data, training_seconds

PAPER = {"gen": (226.0, 2.1), "revise": (228.0, 2.1)}  # Table 2, CoopNets; GAN 225 ± 2
SIGMAS = np.logspace(-1, 0, 21)  # the bandwidth grid, twice as fine as the library default
ALGOS = ("coop", "descriptor", "abp")
MODES = {"coop": ("gen", "revise"), "descriptor": ("des",), "abp": ("gen",)}
NAMES = {"coop": "CoopNets", "descriptor": "Algorithm D (descriptor alone)",
         "abp": "Algorithm G (generator alone, ABP)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data() / "mnist" / "mnist.npz"))
    p.add_argument("--preset", default="mnist-cpu")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--run", default=None, help="score this trained run instead of training")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="config overrides for the trained runs, e.g. gen_lr=5e-4")
    p.add_argument("--outdir", default=str(REPO / "runs"))
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--valid-subset", default="50000:60000", help="x_train rows that choose sigma")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--des-steps", type=int, default=None,
                   help="Langevin steps of revised (and Algorithm D) samples (default: the run's l_D)")
    p.add_argument("--no-ceiling", action="store_true", help="skip scoring real digits")
    p.add_argument("--ablation", action="store_true", help="train and score all three algorithms")
    p.add_argument("--budget-min", type=float, default=10.0, help="ablation: minutes per algorithm")
    for a in ALGOS:
        p.add_argument(f"--steps-{a}", type=int, default=None, help=f"ablation: exact steps for {a}")
    p.add_argument("--algorithms", nargs="+", default=list(ALGOS), choices=ALGOS,
                   help="ablation: which algorithms to train and score")
    p.add_argument("--abp-gen-steps", type=int, default=10, help="ablation: l_G of Algorithm G")
    p.add_argument("--calib-steps", type=int, default=30)
    p.add_argument("--tag", default="", help="name of the JSON summary (default: derived)")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    args.set = parse_set(p, args.set)
    return args


def make_cfg(args, algorithm: str, steps: int | None, outdir: str, **extra):
    from coopnets.config import resolve
    over = dict(args.set, **extra)
    if algorithm == "abp":
        over["gen_steps"] = args.abp_gen_steps
    if steps:
        over["steps"] = steps
    over.setdefault("progress", args.progress)
    return resolve(args.preset, data=args.data, algorithm=algorithm, outdir=outdir, **over)


def calibrate(args, algorithm: str) -> float:
    """Seconds per step of ``algorithm`` on this machine, over steps 10..calib_steps."""
    from coopnets.training import train
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_cfg(args, algorithm, args.calib_steps, tmp, sample_every=0, ckpt_every=0,
                       log_every=5, progress=False)
        run = train(cfg)
        recs = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
        later = [r["sec_per_it"] for r in recs if r["step"] > 10]
        return sum(later) / len(later)


def train_or_last(cfg) -> Path:
    """Train; if the run diverges, say so and go on with its last healthy checkpoint."""
    from coopnets.errors import TrainingDiverged
    from coopnets.training import find_run_dir, train
    try:
        return train(cfg)
    except TrainingDiverged as e:
        print(f"warning: {e}; scoring that checkpoint", flush=True)
        return find_run_dir(cfg)


def score(run: Path, cfg, ckpt, modes, args, test, valid) -> dict:
    from coopnets.images import to_unit
    from coopnets.metrics.mnist_classifier import mnist_fid
    from coopnets.metrics.parzen import parzen_score
    from coopnets.sampling import generate
    out = {}
    # a --gen-ema run: its moving average (what it samples with) and the trained generator
    averaged = ckpt.get("generator_ema") is not None
    steps = args.des_steps if args.des_steps is not None else cfg.des_steps
    for mode in modes:
        for ema in ((True, False) if averaged else (True,)):
            label = mode + (" (EMA)" if averaged and ema else " (trained)" if averaged else "")
            label += f", {steps} steps" if args.des_steps is not None and mode != "gen" else ""
            t0 = time.perf_counter()
            # Algorithm D's samples are its training chains: l_D steps from the reference noise
            x = generate(run, args.num_samples, mode=mode, seed=args.seed, batch_size=500,
                         des_steps=steps, progress=args.progress, ema=ema)  # (N, 1, 28, 28) in [-1, 1]
            sample_s = time.perf_counter() - t0
            p = parzen_score(to_unit(x), valid, test, sigmas=SIGMAS)
            f = mnist_fid(to_unit(x), test)
            out[label] = dict(parzen=p["mean"], parzen_se=p["std_error"], sigma=p["sigma"],
                              mnist_fid=f, sample_seconds=sample_s)
            print(f"  {run.name} {label}: Parzen {p['mean']:.1f} ± {p['std_error']:.1f} "
                  f"(sigma {p['sigma']:.3f}), MNIST FID {f:.2f}", flush=True)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    version = code_version()
    print(f"code {version}")
    data = Path(args.data)
    if not data.is_file():
        print(f"skipped: {data} is absent (MNIST lives in ../shared/data/mnist beside the "
              "checkout); pass --data PATH")
        return 0
    import torch
    from coopnets.checkpoint import load_run
    from coopnets.data import load_images
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    test = load_images(data, key="x_test")  # (10000, 1, 28, 28) uint8
    valid = load_images(data, key="x_train", subset=args.valid_subset)

    results, rows = {}, []
    if args.ablation:
        given = {a: getattr(args, f"steps_{a}") for a in args.algorithms}
        steps = equal_compute_steps(args.algorithms, given, lambda a: calibrate(args, a),
                                    args.budget_min)
        # own folder: a CoopNets ablation run must not resume (or be) the Table 2 run
        ablation_dir = str(Path(args.outdir) / "ablation")
        runs = {a: train_or_last(make_cfg(args, a, steps[a], ablation_dir)) for a in args.algorithms}
    elif args.run:
        runs = {"coop": Path(args.run)}
    else:
        runs = {"coop": train_or_last(make_cfg(args, "coop", args.steps, args.outdir))}

    for a, run in runs.items():
        cfg, _, _, ckpt = load_run(run)
        algo = cfg.algorithm
        secs = training_seconds(run, upto=ckpt["step"])
        res = score(run, cfg, ckpt, MODES[algo], args, test, valid)
        results[a] = {"run": str(run), "step": ckpt["step"], "train_seconds": secs, "scores": res}
        for mode, r in res.items():
            paper = PAPER.get(mode.split(" ")[0].rstrip(",")) if algo == "coop" else None
            rows.append(f"| {NAMES[algo]} | {mode} | {ckpt['step']} | {secs / 60:.1f} | "
                        f"{r['parzen']:.1f} ± {r['parzen_se']:.1f} | {r['sigma']:.3f} | "
                        f"{r['mnist_fid']:.2f} | "
                        + (f"{paper[0]:.0f} ± {paper[1]}" if paper else "–") + " |")

    if not args.ablation and not args.no_ceiling:  # the ceiling: real digits as the "samples"
        from coopnets.metrics.mnist_classifier import mnist_fid
        from coopnets.metrics.parzen import parzen_score
        real = load_images(data, key="x_train", subset=f"0:{args.num_samples}")
        p = parzen_score(real, valid, test, sigmas=SIGMAS)
        f = mnist_fid(real, test)
        results["real"] = {"parzen": p["mean"], "parzen_se": p["std_error"], "sigma": p["sigma"],
                           "mnist_fid": f}
        rows.append(f"| real digits train[:{len(real)}] (ceiling) | – | – | – | "
                    f"{p['mean']:.1f} ± {p['std_error']:.1f} | {p['sigma']:.3f} | {f:.2f} | – |")
    table = "\n".join(["| algorithm | samples | steps | train min | Parzen (nats) | sigma | "
                       "MNIST FID | paper Parzen |", "|---|---|---|---|---|---|---|---|", *rows])
    print(f"\n{args.num_samples} samples per row; paper Table 2: GAN 225 ± 2\n{table}")
    tag = args.tag or ("ablation" if args.ablation else "table2")
    out = Path(args.outdir) / f"bench-mnist-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"code": version, "num_samples": args.num_samples,
                               "seed": args.seed, "results": results}, indent=1) + "\n")
    print(f"summary: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
