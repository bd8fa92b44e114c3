"""Energy dissipation of GCN, wGCN and GGCN (seed 004) on MNIST at equal compute, and their
sample quality (Parzen, MNIST FID).

    nice -n 10 .venv/bin/python benchmarks/bench_energy.py --budget-min 4 --score
    .venv/bin/python benchmarks/bench_energy.py --steps-gcn 600 --steps-wgcn 200 --steps-ggcn 100

Each model trains from the same data (MNIST train[:50000]) with the same networks, chains and
learning rate schedule as its preset (``wgcn-mnist-cpu``, ``ggcn-mnist-cpu``); GCN is
``--algorithm wgcn --jko-prox explicit``, which is Algorithm D bit for bit (tests/test_ggcn.py)
and logs the same per-step record. Equal compute: every model's seconds per step are measured
in a short calibration run, and its step count is the budget divided by them (the counts are
printed; ``--steps-NAME`` repeats them exactly). Every step is logged (f_obs, f_syn, energy =
mean U of the particles, w2_step = mean ||x̃_end − x̃_start||²).

Printed per model: whether the training loop stopped it as diverged (NaN/inf, or a chain move
above 100 per pixel) and at which step; the first step at which the mean energy left the
band of 100x its median magnitude over the first 20 logged steps ("energy blow-up"); the
largest |f(data) − f(syn)|; the range of the energy over the second half and its largest
one-step jump relative to its median magnitude (``jumpiness``); seconds per step. ``--score`` adds Parzen (bandwidth on
train[50000:60000], test set) and MNIST FID against the test set, on ``--num-samples`` samples
(``coopnets sample`` modes: des = x-space chains from N(0, s²I), 10 l_D steps; GGCN: gen = the
amortized g(z), revise = the hidden-space chains). Energy curves go to docs/energy-*.png.

``--step-sizes D1 D2 ...`` is the stability sweep instead: every model trains
``--sweep-steps`` steps at each Langevin / particle step size δ (``des_step_size``), and the
table says whether and when the loop stopped it as diverged, with its largest chain move and
energy. The explicit (Langevin) step on the reference term alone is unstable once τ/s² > 2,
i.e. δ > 2s (0.032 at s = 0.016); the proximal step is not, and the sweep shows where the
learned f moves that line:

    .venv/bin/python benchmarks/bench_energy.py --models gcn wgcn wgcn-semi frame wframe \
        --step-sizes 0.01 0.02 0.03 0.05 --sweep-steps 100
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO, code_version, equal_compute_steps, parse_set, shared_data, training_seconds

MODELS = {  # name -> (preset, overrides)
    "gcn": ("wgcn-mnist-cpu", {"jko_prox": "explicit"}),
    "wgcn": ("wgcn-mnist-cpu", {}),
    "wgcn-semi": ("wgcn-mnist-cpu", {"jko_prox": "semi-implicit"}),
    "ggcn": ("ggcn-mnist-cpu", {}),
    "ggcn-literal": ("ggcn-mnist-cpu", {"ggcn_infer_steps": 0}),  # ggcn.md §4.5 as written
    "frame": ("wframe-mnist-cpu", {"jko_prox": "explicit"}),  # = frame-mnist-cpu, bit for bit
    "wframe": ("wframe-mnist-cpu", {}),
}
LABELS = {"gcn": "GCN (Langevin, Alg. D)", "wgcn": "wGCN (JKO, K_in 3)",
          "wgcn-semi": "wGCN (semi-implicit)", "ggcn": "GGCN (hidden JKO, amortized, g fits data)",
          "ggcn-literal": "GGCN, ggcn.md literal (g learns from chains only)",
          "frame": "FRAME (frozen filters)", "wframe": "wFRAME (frozen, JKO)"}
SIGMAS = np.logspace(-1, 0, 21)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data() / "mnist" / "mnist.npz"))
    p.add_argument("--models", nargs="+", default=["gcn", "wgcn", "ggcn"], choices=list(MODELS))
    p.add_argument("--budget-min", type=float, default=4.0, help="training minutes per model")
    for m in MODELS:
        p.add_argument(f"--steps-{m}", type=int, default=None, help=f"exact steps for {m}")
    p.add_argument("--calib-steps", type=int, default=12)
    p.add_argument("--outdir", default=str(REPO / "runs" / "energy"))
    p.add_argument("--plots", default=str(REPO / "docs"))
    p.add_argument("--score", action="store_true", help="Parzen and MNIST FID of each model")
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--valid-subset", default="50000:60000", help="x_train rows that choose sigma")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="config overrides for every model, e.g. des_width=16")
    p.add_argument("--step-sizes", nargs="+", type=float, default=None, metavar="DELTA",
                   help="stability sweep: train every model at each step size δ instead")
    p.add_argument("--sweep-steps", type=int, default=100, help="steps per sweep run")
    args = p.parse_args(argv)
    args.set = parse_set(p, args.set)
    return args


def make_cfg(args, name, steps, outdir, **extra):
    from coopnets.config import resolve
    preset, over = MODELS[name]
    over = {**args.set, **over, **{k: v for k, v in extra.items() if k != "calib"}}
    over.setdefault("sample_every", 0 if "calib" in extra else 100)
    return resolve(preset, data=args.data, outdir=outdir, progress=False, log_every=1,
                   **({"steps": steps} if steps else {}), **over)


def calibrate(args, name) -> float:
    from coopnets.training import train
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_cfg(args, name, args.calib_steps, tmp, calib=True, ckpt_every=0)
        try:
            run = train(cfg)
        except Exception as e:  # noqa: BLE001 - a model that diverges this early still gets a rate
            print(f"  {name}: calibration stopped: {e}")
            run = next(Path(tmp).glob("0*"))
        recs = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
        later = [r["sec_per_it"] for r in recs if r["step"] > 2] or [recs[-1]["sec_per_it"]]
        return float(np.mean(later))


def train_one(cfg):
    """(run folder, step at which the loop stopped it as diverged or None)."""
    from coopnets.errors import TrainingDiverged
    from coopnets.training import find_run_dir, train
    try:
        return train(cfg), None
    except TrainingDiverged as e:
        run = find_run_dir(cfg)
        print(f"  warning: {e}", flush=True)
        recs = records(run)
        return run, (recs[-1]["step"] + 1 if recs else 1)


def records(run: Path) -> list:
    """The run's stats.jsonl records ([] when it stopped before its first log line)."""
    path = run / "stats.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def curves(run: Path) -> dict:
    recs = records(run)
    keys = ("step", "f_obs", "f_syn", "energy", "w2_step", "f_gap", "sec_per_it")
    return {k: np.array([r.get(k, np.nan) for r in recs], dtype=float) for k in keys}


def blow_up(c: dict, factor: float = 100.0):
    """First step at which |mean energy| exceeds ``factor`` x its median over the first 20
    logged steps (plus 1, so that an energy near 0 does not count), or None."""
    e = c["energy"]
    if len(e) < 21:
        return None
    band = factor * (np.median(np.abs(e[:20])) + 1.0)
    out = np.nonzero(~(np.abs(e[20:]) <= band))[0]
    return int(c["step"][20 + out[0]]) if len(out) else None


def jumpiness(c: dict) -> float:
    """Over the second half: the largest one-step change of the mean energy divided by the
    median magnitude of the energy (about 0 for a smooth curve; above 1 when the energy jumps
    by more than its own size from one step to the next)."""
    e = c["energy"][len(c["energy"]) // 2:]
    return float(np.nanmax(np.abs(np.diff(e))) / np.nanmedian(np.abs(e))) if len(e) > 1 else float("nan")


def plot(all_curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for name, c in all_curves.items():
        for ax, key in zip(axes, ("f_obs", "f_syn", "energy", "w2_step")):
            ax.plot(c["step"], c[key], label=LABELS[name], lw=1)
    for ax, title in zip(axes, ("mean f(observed)", "mean f(synthesized)",
                                "mean energy U of the particles", "W2 step: mean ||x_end - x_start||^2")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_yscale("symlog", linthresh=1.0)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def score(run, algorithm, args, test, valid) -> dict:
    from coopnets.images import to_unit
    from coopnets.metrics.mnist_classifier import mnist_fid
    from coopnets.metrics.parzen import parzen_score
    from coopnets.sampling import generate
    out = {}
    for mode in (("gen", "revise") if algorithm == "ggcn" else ("des",)):
        t0 = time.perf_counter()
        x = generate(run, args.num_samples, mode=mode, seed=args.seed, batch_size=250,
                     progress=False)
        secs = time.perf_counter() - t0
        if not np.isfinite(x.numpy()).all():
            out[mode] = dict(parzen=float("nan"), parzen_se=float("nan"), mnist_fid=float("nan"),
                             sample_seconds=secs)
            continue
        p = parzen_score(to_unit(x), valid, test, sigmas=SIGMAS)
        out[mode] = dict(parzen=p["mean"], parzen_se=p["std_error"], sigma=p["sigma"],
                         mnist_fid=mnist_fid(to_unit(x), test), sample_seconds=secs)
    return out


def sweep(args) -> None:
    """The step-size sweep: one table row per (δ, model)."""
    import warnings
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows of a run stopped at step 1
    print(f"\n{args.sweep_steps} steps per run; 'stopped' = the training loop's divergence "
          "check (NaN/inf, or a chain move above 100 per pixel)")
    print("| δ | τ/s² | model | stopped at | max chain move | max abs energy | median W2 step | s/step |")
    print("|---|---|---|---|---|---|---|---|")
    models = [m for m in args.models if not m.startswith("ggcn")]
    if len(models) < len(args.models):  # its chains run in z with --gen-step-size, des_steps 0
        print("(GGCN left out of the sweep: its chains run in the hidden space, not with δ)")
    for delta in args.step_sizes:
        for m in models:
            cfg = make_cfg(args, m, args.sweep_steps, str(Path(args.outdir) / f"sweep-{delta:g}"),
                           des_step_size=delta, sample_every=0)
            run, stopped = train_one(cfg)
            recs = records(run)
            moves = [r.get("langevin_move", float("nan")) for r in recs] or [float("nan")]
            c = {k: (v if len(v) else np.array([np.nan])) for k, v in curves(run).items()}
            print(f"| {delta:g} | {0.5 * delta * delta / cfg.ref_std ** 2:.3g} | {LABELS[m]} | "
                  f"{'step ' + str(stopped) if stopped else 'no'} | {np.nanmax(moves):.3g} | "
                  f"{np.nanmax(np.abs(c['energy'])):.3g} | {np.nanmedian(c['w2_step']):.3g} | "
                  f"{np.nanmedian(c['sec_per_it']):.3f} |", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"code {code_version()}")
    if not Path(args.data).is_file():
        print(f"skipped: {args.data} is absent (MNIST lives in ../shared/data/mnist beside the "
              "checkout); pass --data PATH")
        return 0
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.step_sizes:
        sweep(args)
        return 0
    given = {m: getattr(args, f"steps_{m.replace('-', '_')}") for m in args.models}
    steps = equal_compute_steps(args.models, given, lambda m: calibrate(args, m), args.budget_min,
                                minimum=25)
    runs, stopped, all_curves = {}, {}, {}
    for m in args.models:
        t0 = time.perf_counter()
        runs[m], stopped[m] = train_one(make_cfg(args, m, steps[m], args.outdir))
        all_curves[m] = curves(runs[m])
        print(f"  {m}: {runs[m]} in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    rows = []
    for m in args.models:
        c = all_curves[m]
        e = c["energy"]
        half = e[len(e) // 2:]
        rows.append(f"| {LABELS[m]} | {steps[m]} | {training_seconds(runs[m]) / 60:.1f} | "
                    f"{'step ' + str(stopped[m]) if stopped[m] else 'no'} | "
                    f"{blow_up(c) or 'no'} | {np.nanmax(np.abs(c['f_gap'])):.3g} | "
                    f"{np.nanmin(half):.3g} .. {np.nanmax(half):.3g} | {jumpiness(c):.3g} | "
                    f"{np.nanmedian(c['w2_step'][len(e) // 2:]):.3g} | {np.nanmedian(c['sec_per_it']):.3f} |")
    print("\n| model | steps | train min | loop stopped it | energy blow-up at | max abs f gap | "
          "energy, 2nd half | max jump / median, 2nd half | median W2 step, 2nd half | s/step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    plot(all_curves, Path(args.plots) / "energy-curves.png")
    print(f"\nplots: {Path(args.plots) / 'energy-curves.png'}")
    if args.score:
        from coopnets.data import load_images
        test = load_images(args.data, key="x_test")
        valid = load_images(args.data, key="x_train", subset=args.valid_subset)
        print(f"\n{args.num_samples} samples per row (fewer than the protocol's 10,000: scores "
              "are lower than 10,000-sample ones and only comparable within this table)")
        print("| model | samples | steps | Parzen (nats) | MNIST FID | sampling s |")
        print("|---|---|---|---|---|---|")
        for m in args.models:
            from coopnets.checkpoint import load_run
            cfg, _, _, ckpt = load_run(runs[m])
            for mode, r in score(runs[m], cfg.algorithm, args, test, valid).items():
                print(f"| {LABELS[m]} | {mode} | {ckpt['step']} | {r['parzen']:.1f} ± "
                      f"{r['parzen_se']:.1f} | {r['mnist_fid']:.1f} | {r['sample_seconds']:.0f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
