"""FID on the CIFAR-10 JPEG sets in ../shared/data/cifar10 (a sanity figure for the FID code).

    # FID between two disjoint random halves of the 10,000 test images (5000 vs 5000)
    nice -n 10 .venv/bin/python benchmarks/bench_fid_cifar.py --halves
    # FID between N random test images and N random training images
    nice -n 10 .venv/bin/python benchmarks/bench_fid_cifar.py --n 1000
    # how far bf16 autocast moves the features and the FID, on N vs N test images
    nice -n 10 .venv/bin/python benchmarks/bench_fid_cifar.py --compare-bf16 200

The images are LOSSY JPEGs (quality 75, 4:2:0 chroma): FIDs against them are not comparable
with published CIFAR-10 FIDs. Subsets are drawn with a NumPy generator seeded by --seed; the
zips list images by class folder, so taking the first N would bias the subsets.
Inception runs at roughly 5-10 images/s on 2 CPU cores (fp32): the full halves take ~20-30 min.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from common import inception_file, shared_data
from coopnets.images import read_image
from coopnets.metrics import fid, inception_features


def read_zip_subset(path: Path, indices: np.ndarray) -> torch.Tensor:
    """Decode the images at ``indices`` (positions in the sorted name list) -> uint8 (N, 3, 32, 32)."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png")))
        arr = np.stack([read_image(io.BytesIO(zf.read(names[i])), names[i], 3) for i in indices])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def count_images(path: Path) -> int:
    with zipfile.ZipFile(path) as zf:
        return sum(n.lower().endswith((".jpg", ".jpeg", ".png")) for n in zf.namelist())


def features(x: torch.Tensor, args, precision: str = "fp32") -> tuple[np.ndarray, float]:
    t = time.time()
    f = inception_features(x, inception_file(), batch_size=args.batch_size, progress=not args.quiet,
                           threads=args.threads or None, precision=precision)
    return f, time.time() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None,
                   help="images per side (default 1000; with --halves: per half, default half the test set)")
    p.add_argument("--halves", action="store_true", help="FID between two disjoint halves of the test set")
    p.add_argument("--compare-bf16", type=int, default=0, metavar="N", help="fp32 vs bf16 on N vs N test images")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    root = shared_data() / "cifar10"
    test_zip, train_zip = root / "cifar10-test-jpeg.zip", root / "cifar10-train-jpeg.zip"
    if not test_zip.is_file() or not train_zip.is_file():
        print(f"skipped: CIFAR-10 JPEG zips not found under {root}")
        return 0
    rng = np.random.default_rng(args.seed)
    n_test = count_images(test_zip)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision {args.precision}; "
          "CIFAR-10 here is JPEG q75: not comparable with published FIDs", flush=True)
    t0 = time.time()
    if args.compare_bf16:
        idx = rng.permutation(n_test)[:2 * args.compare_bf16]
        x = read_zip_subset(test_zip, idx)
        f32, s32 = features(x, args, "fp32")
        f16, s16 = features(x, args, "bf16")
        rel = np.abs(f16 - f32).max() / np.abs(f32).max()
        k = args.compare_bf16
        d32, d16 = fid(f32[:k], f32[k:]), fid(f16[:k], f16[k:])
        print(f"features: max |bf16 - fp32| / max |fp32| = {rel:.3g}; time fp32 {s32:.0f}s, bf16 {s16:.0f}s")
        print(f"FID {k} vs {k} test images: fp32 {d32:.4f}, bf16 {d16:.4f}, "
              f"relative deviation {abs(d16 - d32) / d32:.3g}")
        return 0
    if args.halves:
        half = min(args.n or n_test // 2, n_test // 2)
        perm = rng.permutation(n_test)
        x = read_zip_subset(test_zip, perm[:2 * half])
        f, secs = features(x, args, args.precision)
        value = fid(f[:half], f[half:])
        print(f"FID test half vs test half ({half} vs {half}, seed {args.seed}, {args.precision}): "
              f"{value:.4f}  [features {secs:.0f}s, total {time.time() - t0:.0f}s]")
        return 0
    n = args.n or 1000
    xa = read_zip_subset(test_zip, rng.permutation(n_test)[:n])
    xb = read_zip_subset(train_zip, rng.permutation(count_images(train_zip))[:n])
    fa, sa = features(xa, args, args.precision)
    fb, sb = features(xb, args, args.precision)
    print(f"FID test vs train ({n} vs {n}, seed {args.seed}, {args.precision}): "
          f"{fid(fa, fb):.4f}  [features {sa + sb:.0f}s, total {time.time() - t0:.0f}s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
