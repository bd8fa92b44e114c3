"""Faces, Exp 2-3 of CoopNets (TPAMI 2020) at small scale: CoopNets on 64x64 centre crops of
the CelebA subset; samples, interpolation rows, FID against held-out faces and the average
pairwise SSIM of samples against that of real faces.

    nice -n 10 .venv/bin/python benchmarks/bench_faces.py --steps 600 --num 2000
    .venv/bin/python benchmarks/bench_faces.py --run runs/00001-coop-celeba-64-cpu --num 500

Training (preset celeba-64-cpu on faces 0:9000) is the same run that
bench_completion_faces.py trains, so either script reuses the other's run. FID: Inception
pool3 features (the local TorchScript of ../shared/data/inception) of ``--num`` generator
samples, of ``--num`` revised samples and of ``--num`` training faces, each against the
1,000 held-out faces 9000:10000; the training-faces row is the floor that this sample count
allows. Pairwise SSIM: mean over 1,000 seeded pairs within each set (lower = more diverse).
Pictures: <out>/faces-samples.png (generator | revised), <out>/faces-interpolation.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import (FACE_TRAIN, REPO, code_version, face_run, inception_file, shared_data,
                    training_seconds)
from coopnets.fast import bf16_is_native


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data() / "celeba" / "celeba-10k-89x109-jpeg.zip"))
    p.add_argument("--run", default=None, help="reuse this trained run instead of training")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--outdir", default=str(REPO / "runs"), help="where the run folder goes")
    p.add_argument("--out", default=str(REPO / "docs"), help="where the pictures go")
    p.add_argument("--num", type=int, default=2000, help="samples (and training faces) for FID")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16"),
                   help="Inception precision (default: bf16 where the CPU has bf16 kernels, about "
                        "1.6x faster there with FID within 0.3 %%; fp32 where bf16 is emulated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    if args.precision is None:
        args.precision = "bf16" if bf16_is_native("cpu") else "fp32"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    version = code_version()
    print(f"code {version}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    data = Path(args.data)
    if not data.is_file():
        print(f"skipped: {data} is absent (the CelebA subset lives in ../shared/data/celeba "
              "beside the checkout); pass --data PATH")
        return 0
    from coopnets.commands import main as cli
    from coopnets.data import load_images
    from coopnets.images import make_grid, save_array_png, to_float, to_unit
    from coopnets.metrics.fid import feature_stats, fid_from_stats
    from coopnets.metrics.image_quality import pairwise_ssim
    from coopnets.metrics.inception import inception_features
    from coopnets.sampling import generate

    run = face_run(args)
    train_min = training_seconds(run) / 60
    out = Path(args.out)

    # pictures: 36 generator samples | the same revised; 6 interpolation rows of 8
    gen_x = generate(run, args.num, "gen", seed=args.seed, progress=args.progress)
    rev_x = generate(run, args.num, "revise", seed=args.seed, progress=args.progress)
    g, r = make_grid(gen_x[:36], 6), make_grid(rev_x[:36], 6)
    gap = np.full((g.shape[0], 12, g.shape[2]), 255, np.uint8)
    save_array_png(np.concatenate([g, gap, r], 1), out / "faces-samples.png")
    cli(["interpolate", str(run), "--steps", "8", "--rows", "6", "--seed", str(args.seed),
         "--revise", "--out", str(out / "faces-interpolation.png")])

    real = load_images(data, image_size=64, center_crop=True, subset=FACE_TRAIN)
    g = torch.Generator().manual_seed(args.seed)
    train_faces = real[torch.randperm(len(real), generator=g)[: args.num]]
    held_out = load_images(data, image_size=64, center_crop=True, subset="9000:10000")

    def feats(x):
        return inception_features(x, inception_file(), precision=args.precision,
                                  progress=args.progress)

    t0 = time.perf_counter()
    ref = feature_stats(feats(held_out))
    rows, results = [], {}
    for name, x in (("generator samples", gen_x), ("revised samples", rev_x),
                    ("training faces (floor)", train_faces)):
        unit = to_unit(x) if x.dtype != torch.uint8 else to_unit(to_float(x))
        f = fid_from_stats(*feature_stats(feats(unit)), *ref)
        s = pairwise_ssim(unit, max_pairs=1000, seed=args.seed)
        results[name] = {"fid": f, "pairwise_ssim": s, "n": len(x)}
        rows.append(f"| {name} | {len(x)} | {f:.2f} | {s:.4f} |")
        print(f"{name}: FID {f:.2f}, pairwise SSIM {s:.4f}", flush=True)
    s_ho = pairwise_ssim(to_unit(to_float(held_out)), max_pairs=1000, seed=args.seed)
    rows.append(f"| held-out faces (reference) | {len(held_out)} | – | {s_ho:.4f} |")
    secs = time.perf_counter() - t0
    from coopnets.checkpoint import load_checkpoint
    step = load_checkpoint(run)["step"]
    table = "\n".join(["| images | n | FID vs 1,000 held-out | pairwise SSIM |",
                       "|---|---|---|---|", *rows])
    print(f"\nrun {run} (step {step}, {train_min:.1f} min training); Inception {args.precision}, "
          f"{secs / 60:.1f} min\n{table}")
    (Path(run) / "bench-faces.json").write_text(json.dumps(
        {"code": version, "run": str(run), "step": step, "train_minutes": train_min,
         "precision": args.precision, "held_out": len(held_out), "seed": args.seed,
         "held_out_pairwise_ssim": s_ho, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
