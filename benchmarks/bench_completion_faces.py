"""Pattern completion on faces: Exp 6, Table 4 of CoopNets (TPAMI 2020).

Trains (or reuses, ``--run``) a CoopNets face model on 64x64 centre crops of the first 9,000
faces of the CelebA subset, then completes held-out faces (from the last 1,000) occluded by
seeded M30 / M40 / M50 masks (a square block hiding 30 / 40 / 50 % of the image at a random
place) and prints the recovery error and PSNR beside the paper's CoopNets row.

    nice -n 10 .venv/bin/python benchmarks/bench_completion_faces.py --steps 300
    .venv/bin/python benchmarks/bench_completion_faces.py --run runs/00003-coop-celeba-64-cpu

Pixels in [0, 1]. error = mean |x − x̂| over the occluded pixels; PSNR = 10 log10(1 / MSE)
over the whole image (our definition); "PSNR occ." takes the MSE over the occluded pixels
only, shown because the paper does not say which region its PSNR uses. "mean fill" is the
trivial baseline (occluded pixels = mean colour of the visible ones), for scale.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common import REPO, code_version, face_run, shared_data

DATA = shared_data() / "celeba" / "celeba-10k-89x109-jpeg.zip"
PAPER = {"m30": (0.115, 16.893), "m40": (0.124, 16.098), "m50": (0.136, 15.105)}  # Table 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA), help="CelebA zip (89x109 JPEGs)")
    p.add_argument("--run", default=None, help="reuse this trained run instead of training")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--outdir", default=str(REPO / "runs"), help="where the run folder goes")
    p.add_argument("--num", type=int, default=200, help="held-out faces to complete")
    p.add_argument("--inf-steps", type=int, default=200, help="Langevin steps of z per restart")
    p.add_argument("--restarts", type=int, default=1, help="random starts of z; best fit kept")
    p.add_argument("--refine-steps", type=int, default=0, help="descriptor steps afterwards")
    p.add_argument("--seed", type=int, default=0, help="seeds the masks and the inference")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--new-run", action="store_true", help="train a new run even if one matches")
    p.add_argument("--progress", action="store_true", help="training progress bar")
    return p.parse_args(argv)


def psnr_occluded(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR with the MSE over the occluded pixels only, per image; a, b in [0, 1]."""
    occ = (mask == 0).expand_as(a).double()
    mse = ((a.double() - b.double()) ** 2 * occ).flatten(1).sum(1) / occ.flatten(1).sum(1)
    return 10 * torch.log10(1 / mse)


def mean_fill(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The trivial baseline: every occluded pixel gets the mean colour of the visible ones."""
    vis = mask.expand_as(x)
    mean = (x * vis).sum((2, 3), keepdim=True) / vis.sum((2, 3), keepdim=True)
    return torch.where(vis > 0.5, x, mean.expand_as(x))


def main(argv=None) -> int:
    args = parse_args(argv)
    version = code_version()  # once, at start: the modules below are imported now
    print(f"code {version}, torch {torch.__version__}")
    data = Path(args.data)
    if not data.is_file() and not args.run:
        print(f"skipped: {data} is absent (the CelebA subset lives in ../shared/data/celeba "
              "beside the checkout); pass --data PATH")
        return 0
    from coopnets.checkpoint import load_run
    from coopnets.completion import complete_images, psnr_per_image, recovery_error_per_image
    from coopnets.data import load_images
    from coopnets.images import save_grid, to_unit
    from coopnets.masks import parse_mask

    run = face_run(args, new_run=args.new_run)
    cfg, des, gen, ckpt = load_run(run)
    if not data.is_file():
        print(f"skipped: {data} is absent; the held-out faces are needed for completion")
        return 0
    size = ckpt["image_size"]
    held_out = load_images(data, image_size=size, center_crop=True, channels=ckpt["channels"],
                           subset="9000:10000")[: args.num]  # (N, 3, 64, 64) uint8
    print(f"completing {len(held_out)} held-out faces: {args.inf_steps} Langevin steps of z x "
          f"{args.restarts} restarts, {args.refine_steps} refinement steps, seed {args.seed}")

    rows, results = [], {}
    for name, (p_err, p_psnr) in PAPER.items():
        t0 = time.perf_counter()
        masks = parse_mask(name, size, len(held_out), args.seed)
        res = complete_images(des, gen, cfg, held_out, masks, steps=args.inf_steps,
                              restarts=args.restarts, refine_steps=args.refine_steps,
                              seed=args.seed, batch_size=args.batch_size)
        occ = psnr_occluded(to_unit(res["original"]), to_unit(res["recovered"]), masks)
        err, psnr = float(res["error"].mean()), float(res["psnr"].mean())
        a, base = to_unit(res["original"]), to_unit(mean_fill(res["original"], masks))
        b_err = float(recovery_error_per_image(a, base, masks).mean())
        b_psnr = float(psnr_per_image(a, base).mean())
        out = run / f"completion-bench-{name}"
        for key in ("original", "occluded", "recovered"):
            save_grid(res[key][:16], out / f"{key}.png", nrow=8)
        results[name] = {"error": err, "psnr": psnr, "psnr_occluded": float(occ.mean()),
                         "mean_fill_error": b_err, "mean_fill_psnr": b_psnr,
                         "seconds": time.perf_counter() - t0}
        rows.append(f"| {name.upper()} | {err:.3f} | {psnr:.2f} | {float(occ.mean()):.2f} | "
                    f"{b_err:.3f} / {b_psnr:.2f} | {p_err:.3f} | {p_psnr:.2f} |")
        print(f"{name}: error {err:.4f}  PSNR {psnr:.3f}  ({results[name]['seconds']:.0f} s)",
              flush=True)

    table = "\n".join(["| mask | error (ours) | PSNR dB (ours) | PSNR occ. dB (ours) | "
                       "mean-fill error / PSNR | error (paper) | PSNR dB (paper) |",
                       "|---|---|---|---|---|---|---|", *rows])
    print(f"\nrun {run} (step {ckpt['step']}), {len(held_out)} held-out faces\n{table}")
    (run / "completion-bench.json").write_text(json.dumps(
        {"run": str(run), "code": version, "step": ckpt["step"], "num": len(held_out),
         "seed": args.seed,
         "inf_steps": args.inf_steps, "restarts": args.restarts,
         "refine_steps": args.refine_steps, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
