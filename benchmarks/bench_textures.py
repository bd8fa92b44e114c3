"""Textures, Exp 1 / Fig. 1 of CoopNets (TPAMI 2020): one sheet per texture with the observed
image, 3 syntheses of the same size and one twice as large.

    nice -n 10 .venv/bin/python benchmarks/bench_textures.py --steps 1000
    .venv/bin/python benchmarks/bench_textures.py --textures brick --steps 500 --out /tmp/tex
    .venv/bin/python benchmarks/bench_textures.py --preset texture-224-cpu --textures brick  # 224x224
    .venv/bin/python benchmarks/bench_textures.py --run runs/tex224 --out /tmp/tex   # sheets only

Each texture of ../shared/data/textures (512x512 greyscale) is resized to 128x128 and a
stationary CoopNets (preset texture-cpu: fully convolutional nets, a spatial latent) is
trained on random 64x64 crops of it. The syntheses are revised samples (generator, then
descriptor Langevin) at 128x128 and 256x256 from seeded latents. The sheet is
``<out>/texture-<name>.png`` (``texture-<name>-224.png`` at 224x224): observed | 3 syntheses |
2x synthesis. A periodic cell is measured, not only looked for: the correlation of each picture with itself shifted by one latent cell of
the generator (16 or 32 pixels), across and down, printed beside the observed image's: 0.01-0.11
for the three textures, 0.23-0.31 for an old grass sheet with a visible 16-pixel cell, 0.99 for
a generator that ignores its latent (docs/results.md, Textures). The layout of the bright lines
is measured too (the joints and columns of brick): the autocorrelation of the horizontal and of
the vertical lines out to a brick's length (1.5 cells), correlated with the observed picture's,
and how unevenly the horizontal lines spread over windows of that size (clustering). Of 22
brick sheets at 224x224 the three a person reads as the running bond have a mean horizontal
layout over the three syntheses of 0.51-0.72 and clustering 0.14-0.17; the ladders, grids, mazes,
stripes and clustered joints of the other 19 have at most 0.40 (docs/results.md). ``--set``
overrides the
preset's fields (e.g. ``image_size=224 crop_size=112``); ``--run`` makes the sheets of trained
runs (folders or checkpoints) instead of training, each at the size its run was trained on.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from common import REPO, code_version, parse_set, shared_data, training_seconds


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(shared_data() / "textures"))
    p.add_argument("--textures", nargs="*", default=["brick", "grass", "gravel"])
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--preset", default="texture-cpu")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="config overrides of the preset, e.g. image_size=224 crop_size=112")
    p.add_argument("--run", nargs="*", default=[], metavar="RUN",
                   help="make the sheets of these trained runs instead of training")
    p.add_argument("--outdir", default=str(REPO / "runs"), help="where the run folders go")
    p.add_argument("--out", default=str(REPO / "docs"), help="where the sheets go")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    args.set = parse_set(p, args.set)
    return args


def sheet(observed, synth, big, pad: int = 8) -> np.ndarray:
    """observed | synth[0..2] | big on a white strip; inputs (C, H, W) in [-1, 1]."""
    from coopnets.images import to_uint8
    tiles = [to_uint8(t[None])[0].permute(1, 2, 0).numpy() for t in (observed, *synth, big)]
    h = max(t.shape[0] for t in tiles)
    w = sum(t.shape[1] for t in tiles) + pad * (len(tiles) - 1)
    out = np.full((h, w, tiles[0].shape[2]), 255, np.uint8)
    x = 0
    for t in tiles:
        out[: t.shape[0], x: x + t.shape[1]] = t
        x += t.shape[1] + pad
    return out


def cell_correlation(image: np.ndarray, lag: int) -> float:
    """Mean Pearson correlation of a (H, W) picture with itself shifted by ``lag`` pixels across
    and down: about 1 for a pattern that repeats every ``lag`` pixels, about 0 for one that does
    not correlate so far."""
    a = np.asarray(image, dtype=np.float64)
    pairs = ((a[:, :-lag], a[:, lag:]), (a[:-lag], a[lag:]))
    return float(np.mean([np.corrcoef(u.ravel(), v.ravel())[0, 1] for u, v in pairs]))


def ridges(image: np.ndarray, axis: int) -> np.ndarray:
    """Where a (H, W) picture has a bright line across ``axis`` (0: horizontal lines, such as the
    joints of a brick column; 1: vertical ones): minus its second difference over ±2 pixels along
    ``axis``, positive part, without the 3-pixel border that the difference wraps."""
    a = np.asarray(image, dtype=np.float64)
    second = np.roll(a, 2, axis) + np.roll(a, -2, axis) - 2 * a
    return np.maximum(-second, 0)[3:-3, 3:-3]


def autocorrelation(m: np.ndarray, lag: int) -> np.ndarray:
    """Normalised autocorrelation of a (H, W) map over shifts of up to ``lag`` pixels each way:
    a (2 lag + 1)² array, 1 at no shift, each shift averaged over the pixels it overlaps."""
    m = m - m.mean()
    h, w = m.shape
    spectrum = np.fft.rfft2(m, s=(2 * h, 2 * w))  # zero-padded: no wrap-around
    c = np.fft.fftshift(np.fft.irfft2(spectrum * np.conj(spectrum), s=(2 * h, 2 * w)))
    c = c[h - lag: h + lag + 1, w - lag: w + lag + 1]
    dy, dx = np.mgrid[-lag:lag + 1, -lag:lag + 1]
    c = c / ((h - abs(dy)) * (w - abs(dx)))
    return c / c[lag, lag]


def joint_layout(image: np.ndarray, observed: np.ndarray, lag: int) -> tuple[float, float]:
    """How the lines of a synthesis are laid out against the observed picture's: the Pearson
    correlation between the autocorrelations (shifts up to ``lag``, the central 7x7 left out) of
    their bright horizontal lines, and of their vertical ones. For brick the first tells the
    running bond (joints one brick apart along a column, staggered between columns) from ladders,
    square grids, mazes and stripes; the second, the columns' spacing. A picture without such
    lines scores 0."""
    keep = np.ones((2 * lag + 1,) * 2, bool)
    keep[lag - 3: lag + 4, lag - 3: lag + 4] = False
    scores = []
    for axis in (0, 1):
        a, b = (ridges(x, axis) for x in (image, observed))
        if a.std() == 0 or b.std() == 0:
            scores.append(0.0)
            continue
        scores.append(float(np.corrcoef(autocorrelation(a, lag)[keep],
                                        autocorrelation(b, lag)[keep])[0, 1]))
    return scores[0], scores[1]


def joint_clustering(image: np.ndarray, window: int) -> float:
    """How unevenly a picture's horizontal lines are spread: the coefficient of variation of their
    density over square windows of ``window`` pixels. Joints in clusters (dense patches beside
    long unbroken columns) give a high value; an even bond, a low one."""
    r = ridges(image, 0)
    n, m = r.shape[0] // window, r.shape[1] // window
    density = r[: n * window, : m * window].reshape(n, window, m, window).mean(axis=(1, 3))
    return float(density.std() / density.mean())


def generator_cell(cfg) -> int:
    """Pixels per latent cell of the run's (stationary) generator."""
    from coopnets.models import GENERATORS
    return GENERATORS[cfg.gen_net].cell


def main(argv=None) -> int:
    args = parse_args(argv)
    version = code_version()
    print(f"code {version}")
    from coopnets.checkpoint import load_checkpoint
    from coopnets.config import config_from_dict, resolve
    from coopnets.data import load_images
    from coopnets.images import save_array_png, to_float, to_uint8
    from coopnets.sampling import generate
    from coopnets.training import train

    if args.run:  # sheets of trained runs: each names its texture and its size
        jobs = []
        for run in map(Path, args.run):
            cfg = config_from_dict(load_checkpoint(run)["config"], saved=True)
            jobs.append((Path(cfg.data).stem, cfg, run))
    else:
        folder = Path(args.data_dir)
        paths = [folder / f"{name}.png" for name in args.textures]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            print(f"skipped: {', '.join(missing)} absent (the textures live in "
                  "../shared/data/textures beside the checkout); pass --data-dir")
            return 0
        over = dict(args.set)
        if args.steps:
            over["steps"] = args.steps
        jobs = [(name, resolve(args.preset, data=str(path), outdir=args.outdir,
                               progress=args.progress, **over), None)
                for name, path in zip(args.textures, paths)]

    summary = {}
    for name, cfg, run in jobs:
        t0 = time.perf_counter()
        if run is None:
            run = train(cfg)
        observed = to_float(load_images(cfg.data, "texture", cfg.image_size, cfg.center_crop,
                                        cfg.channels))[0]
        size = observed.shape[-1]
        synth = generate(run, 3, "revise", seed=args.seed, size=size, progress=False)
        big = generate(run, 1, "revise", seed=args.seed + 1, size=2 * size, progress=False)[0]
        out = Path(args.out) / f"texture-{name}{'' if size == 128 else f'-{size}'}.png"
        save_array_png(sheet(observed, synth, big), out)
        secs = training_seconds(run)
        cell = generator_cell(cfg)
        grey = [to_uint8(t[None])[0].float().mean(0).numpy() for t in (observed, *synth, big)]
        corr = [cell_correlation(g, cell) for g in grey]
        scale = 3 * cell // 2  # a brick's length at both presets' sizes (25 and 45 pixels)
        layout = [joint_layout(g, grey[0], scale) for g in grey[1:]]
        clustering = [joint_clustering(g, scale) for g in grey]
        summary[name] = {"run": str(run), "steps": cfg.steps, "image_size": size,
                         "train_seconds": secs, "seconds_total": time.perf_counter() - t0,
                         "sheet": str(out), "cell": cell, "cell_correlation": corr,
                         "layout_scale": scale,
                         "layout_horizontal": [h for h, _ in layout],
                         "layout_vertical": [v for _, v in layout],
                         "clustering": clustering}
        print(f"{name}: {cfg.steps} steps at {size}x{size}, training {secs:.0f} s -> {out}\n"
              f"  correlation at one {cell}-pixel cell: observed {corr[0]:.2f}, syntheses "
              f"{' '.join(f'{c:.2f}' for c in corr[1:4])}, 2x {corr[4]:.2f}\n"
              f"  layout of the lines against the observed (to {scale} pixels), horizontal: "
              f"{' '.join(f'{h:.2f}' for h, _ in layout[:3])}, 2x {layout[3][0]:.2f}; vertical: "
              f"{' '.join(f'{v:.2f}' for _, v in layout[:3])}, 2x {layout[3][1]:.2f}\n"
              f"  clustering of the horizontal lines ({scale}-pixel windows): observed "
              f"{clustering[0]:.2f}, syntheses {' '.join(f'{c:.2f}' for c in clustering[1:4])}, "
              f"2x {clustering[4]:.2f}", flush=True)
    Path(args.outdir).mkdir(parents=True, exist_ok=True)
    (Path(args.outdir) / "bench-textures.json").write_text(
        json.dumps({"code": version, "seed": args.seed, "results": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
