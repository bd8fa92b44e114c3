"""Dynamic textures, Exp 7 / Fig. 10 and Table 5 of CoopNets (TPAMI 2020): for each clip, the
observed video and 2 syntheses as a GIF and a PNG frame strip, and PSNR/SSIM of our syntheses
and of the LDS baseline (Doretto et al. 2003) against the observed clip, side by side.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_dyntex.py
    .venv/bin/python benchmarks/bench_dyntex.py --clips vapour --steps 100 --out /tmp/dt
    .venv/bin/python benchmarks/bench_dyntex.py --preset dyntex-fc-cpu --clips fire flag

Each clip of ../shared/data/dynamic_textures is cut to its first ``--frames`` frames and
centre-cropped and resized to ``--size`` squared: that is the observed video. CoopNets
(``--preset``: dyntex-cpu, stationary nets on random spatio-temporal crops; dyntex-fc-cpu,
spatially fully connected nets on whole frames and random runs of frames) trains on it; the syntheses are revised
samples (generator, then descriptor Langevin) of the observed size and length, seeds 0 and 1.
The LDS (n = ``--lds-states`` states) is fitted to the observed video's pixels and driven by
noise (seeds 0 and 1), clipped to [0, 255]. The protocol of ``coopnets.metrics.video_quality``
scores both: frame t against frame t, averaged over frames, then syntheses, then clips.
"mean frame" (the observed clip's temporal mean, repeated: not a synthesis) shows what the
protocol gives a video that does not move. Outputs: ``<out>/<clip>.gif`` (observed | ours 1 |
ours 2), ``<out>/<clip>.png`` (rows: observed, ours 1, ours 2, generator 1, generator 2, LDS 1), and
``<out>/table5.json``; a preset other than dyntex-cpu writes ``<clip>-<preset>.gif``/``.png``
and ``table5-<preset>.json`` instead, so the presets' tables sit side by side. Runs already trained (same config in ``--outdir``) are not retrained.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from common import REPO, code_version, parse_set, shared_data, training_seconds

CLIPS = {  # name -> file in ../shared/data/dynamic_textures
    "boiling_water": "boiling_water_55fa210.avi", "fire": "fire_fire.avi",
    "flag": "flag2_571c110.avi", "flame": "flame_fire_1.mp4",
    "flashing_light": "flashing_light_64ce210.avi", "fountain": "fountain_6486110.avi",
    "vapour": "vapour_observed_tile_64x128x128x3.npy",
    "waterfall": "waterfall_observed_tile_64x128x128x3.npy",
}
PAPER = [("CoopNets (paper)", 19.41, 0.599), ("LDS (paper)", 19.15, 0.594),
         ("FFT-LDS (paper)", 12.46, 0.290), ("MKGPDM (paper)", 14.29, 0.358),
         ("HOSVD (paper)", 18.39, 0.457)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(shared_data() / "dynamic_textures"))
    p.add_argument("--clips", nargs="*", default=list(CLIPS))
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--preset", default="dyntex-cpu",
                   help="a video preset: dyntex-cpu (stationary nets) or dyntex-fc-cpu (fixed layout)")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--lds-states", type=int, default=20)
    p.add_argument("--outdir", default=str(REPO / "runs"), help="where the run folders go")
    p.add_argument("--out", default=str(REPO / "docs" / "dyntex"), help="GIFs, strips, table5.json")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="config overrides on top of the preset, e.g. des_noise=false")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    args.set = parse_set(p, args.set)
    return args


def suffix(preset: str) -> str:
    """File-name suffix of a preset's outputs ("" for dyntex-cpu, whose files came first)."""
    return "" if preset == "dyntex-cpu" else f"-{preset}"


def run_clip(name: str, path: Path, args) -> dict:
    import torch

    import coopnets
    from coopnets.images import to_float, to_uint8
    from coopnets.lds import fit_lds
    from coopnets.metrics.video_quality import video_scores
    from coopnets.video import load_videos, save_gif, save_strip
    observed = load_videos(path, frames=args.frames, image_size=args.size, center_crop=True)[0]
    over = {"steps": args.steps} if args.steps else {}
    over.update(args.set)
    cfg = coopnets.resolve(args.preset, data=str(path), frames=args.frames, image_size=args.size,
                           outdir=args.outdir, progress=args.progress, **over)
    t0 = time.perf_counter()
    run = coopnets.train(cfg)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    ours = coopnets.generate(run, 2, mode="revise", seed=0, frames=args.frames, size=args.size,
                             progress=False)
    ours_gen = coopnets.generate(run, 2, mode="gen", seed=0, frames=args.frames, size=args.size,
                                 progress=False)  # the same latents, before revision
    sample_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    lds = fit_lds(observed, n=args.lds_states)
    lds_u8 = [torch.from_numpy(np.clip(np.round(lds.synthesize(args.frames, seed=s)), 0, 255)
                               .astype(np.uint8)) for s in (0, 1)]
    lds_s = time.perf_counter() - t2
    mean = observed.double().mean(1, keepdim=True).round().to(torch.uint8).expand_as(observed)
    scores = {"ours": video_scores(to_uint8(ours), observed),
              "ours_gen": video_scores(to_uint8(ours_gen), observed),
              "lds": video_scores(torch.stack(lds_u8), observed),
              "mean_frame": video_scores(mean.contiguous()[None], observed)}
    out = Path(args.out)
    obs_f = to_float(observed)[None]
    stem = name + suffix(args.preset)
    save_gif(torch.cat([obs_f, ours]), out / f"{stem}.gif")
    save_strip(torch.cat([obs_f, ours, ours_gen, to_float(lds_u8[0])[None]]), out / f"{stem}.png")
    return {"clip": name, "run": str(run), "train_min": training_seconds(run) / 60,
            "wall_min": wall / 60, "sample_s": sample_s, "lds_s": lds_s,
            "lds_spectral_radius": lds.spectral_radius(),
            **{f"{k}_{m}": float(v[m].mean()) for k, v in scores.items() for m in ("psnr", "ssim")}}


def main(argv=None) -> int:
    args = parse_args(argv)
    data = Path(args.data_dir)
    if not data.is_dir():
        print(f"skipped: {data} is not here (the shared data sit beside the checkout)")
        return 0
    unknown = [c for c in args.clips if c not in CLIPS]
    if unknown:
        print(f"unknown clip(s) {unknown}; choose from {', '.join(CLIPS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, table = [], out / f"table5{suffix(args.preset)}.json"
    old = {r["clip"]: r for r in json.loads(table.read_text())["clips"]} if table.is_file() else {}
    for name in args.clips:
        r = run_clip(name, data / CLIPS[name], args)
        rows.append(r)
        old[name] = r
        print(f"{name}: ours {r['ours_psnr']:.2f}/{r['ours_ssim']:.3f}  LDS {r['lds_psnr']:.2f}/"
              f"{r['lds_ssim']:.3f}  mean frame {r['mean_frame_psnr']:.2f}/{r['mean_frame_ssim']:.3f}"
              f"  train {r['train_min']:.1f} CPU-min", flush=True)
        table.write_text(json.dumps({"commit": code_version(), "preset": args.preset,
                                     "frames": args.frames, "size": args.size,
                                     "clips": list(old.values())}, indent=1) + "\n")
    allr = list(old.values())
    print(f"\ncommit {code_version()}, preset {args.preset}, {args.frames} frames of "
          f"{args.size}x{args.size}, clips: {', '.join(r['clip'] for r in allr)}\n")
    print("| clip | ours PSNR | ours SSIM | generator PSNR | generator SSIM | LDS PSNR | LDS SSIM "
          "| mean-frame PSNR | mean-frame SSIM | train min |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in allr:
        g = (f"{r['ours_gen_psnr']:.2f} | {r['ours_gen_ssim']:.3f}" if "ours_gen_psnr" in r else "|")
        print(f"| {r['clip']} | {r['ours_psnr']:.2f} | {r['ours_ssim']:.3f} | {g} | {r['lds_psnr']:.2f} | "
              f"{r['lds_ssim']:.3f} | {r['mean_frame_psnr']:.2f} | {r['mean_frame_ssim']:.3f} | "
              f"{r['train_min']:.1f} |")
    avg = {k: float(np.mean([r[k] for r in allr])) for k in allr[0] if k.endswith(("psnr", "ssim"))}
    gen = (f"| CoopNets generator alone (ours) | {avg['ours_gen_psnr']:.2f} | "
           f"{avg['ours_gen_ssim']:.3f} |\n" if "ours_gen_psnr" in avg else "")
    print(f"\n| model | PSNR | SSIM |\n|---|---|---|\n| CoopNets (ours, {args.preset}, {len(allr)} clips) | "
          f"{avg['ours_psnr']:.2f} | {avg['ours_ssim']:.3f} |\n{gen}| LDS (ours, same protocol) | "
          f"{avg['lds_psnr']:.2f} | {avg['lds_ssim']:.3f} |\n| mean frame (not a synthesis) | "
          f"{avg['mean_frame_psnr']:.2f} | {avg['mean_frame_ssim']:.3f} |")
    for label, p, s in PAPER:
        print(f"| {label} | {p:.2f} | {s:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
