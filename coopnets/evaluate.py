"""``coopnets eval``: score a run, a folder/zip of images, or an ``.npz``/``.npy`` of samples.

    coopnets eval SOURCE --metric fid|kid|is|parzen|mnist-fid|psnr|ssim [--ref PATH] ...

SOURCE is a run folder or checkpoint (``--num-samples`` samples are generated with
``coopnets.sampling.generate``, seeded per example, and rounded to uint8 exactly as saved
PNGs would be), or images that ``coopnets.data.load_images`` reads. ``--ref`` is a second
image set, or for fid/mnist-fid an ``.npz`` of statistics (mu, sigma) written by
``--save-stats``. ``--image-size``/``--center-crop`` apply to every image set read from disk.

Metrics (see ``coopnets.metrics``):
  fid, kid     Inception-v3 pool3 features (local TorchScript, --inception); reference
               statistics are cached by a hash of the reference pixels (``$COOPNETS_CACHE``)
  mnist-fid    FID on the features of the shipped MNIST classifier (--classifier: other weights)
  is           Inception Score from a user-supplied TorchScript classifier (--classifier)
  parzen       Parzen-window log-likelihood: bandwidth chosen on --validation, scored on --ref
  psnr, ssim   SOURCE image i against --ref image i (same count and shape)

A result is printed as a small table and appended as one JSON line to ``<run>/metrics.jsonl``
when SOURCE is a run, or to ``--log PATH``.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

METRICS = ("fid", "kid", "is", "parzen", "mnist-fid", "psnr", "ssim")
DEFAULT_RUN_SAMPLES = 10000


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``coopnets eval``."""
    p.description = ("Score a run (samples are generated), a folder/zip of images, or an .npz/.npy of "
                     "samples with one metric; the result is printed and appended to a JSON log.")
    p.add_argument("source", help="run folder or checkpoint, folder/zip of images, or .npz/.npy of samples")
    p.add_argument("--metric", required=True, choices=METRICS)
    p.add_argument("--ref", help="reference images (or a statistics .npz for fid/mnist-fid); "
                                 "the test set for parzen")
    p.add_argument("--ref-subset", default="", help="START:STOP of the reference set")
    p.add_argument("--ref-key", default="", help="array name in a reference .npz (e.g. x_test)")
    p.add_argument("--validation", help="parzen: images that choose the bandwidth")
    p.add_argument("--validation-subset", default="", help="START:STOP, e.g. 50000:60000")
    p.add_argument("--validation-key", default="", help="array name in the validation .npz")
    p.add_argument("--source-key", default="", help="array name in a SOURCE .npz")
    p.add_argument("--num-samples", "-n", type=int, default=None,
                   help=f"samples to generate from a run (default {DEFAULT_RUN_SAMPLES}) or the first N "
                        "images of SOURCE (default all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and KID/pair subsets)")
    p.add_argument("--mode", default="revise", choices=("gen", "revise", "des"),
                   help="which samples of a run to score (default revise)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--inception", help="Inception TorchScript file (default: shared data or $COOPNETS_INCEPTION)")
    p.add_argument("--classifier", help="is: TorchScript classifier; mnist-fid: classifier weights")
    p.add_argument("--image-size", type=int, default=0, help="resize images read from disk to N x N")
    p.add_argument("--center-crop", action="store_true", help="centre-crop to a square before resizing")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--splits", type=int, default=10, help="is: number of splits")
    p.add_argument("--sigmas", default="", help="parzen: comma-separated bandwidths (default logspace(-1,0,10))")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="Inception precision")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached reference statistics")
    p.add_argument("--save-stats", help="fid/mnist-fid: also write SOURCE's statistics to this .npz")
    p.add_argument("--log", help="append the JSON result here (default: <run>/metrics.jsonl for runs)")


def is_run(path) -> bool:
    p = Path(path)
    return (p.is_dir() and ((p / "config.json").is_file() or (p / "latest.pt").is_file())) or (
        p.is_file() and p.suffix == ".pt")


def _check_args(args) -> None:
    """Everything that can be checked before minutes of sampling."""
    if not Path(args.source).exists():
        raise UserError(f"SOURCE {args.source} does not exist")
    needs_ref = args.metric in ("fid", "kid", "parzen", "mnist-fid", "psnr", "ssim")
    if needs_ref and not args.ref:
        raise UserError(f"--metric {args.metric} needs --ref PATH (reference images)")
    if args.ref and not Path(args.ref).exists():
        raise UserError(f"--ref {args.ref} does not exist")
    if args.metric == "parzen":
        if not args.validation:
            raise UserError("--metric parzen needs --validation PATH (images that choose the bandwidth)")
        if not Path(args.validation).exists():
            raise UserError(f"--validation {args.validation} does not exist")
    if args.metric == "is" and not args.classifier:
        raise UserError("--metric is needs --classifier PATH: a TorchScript file mapping images in "
                        "[-1, 1] to logits (no Inception classification weights ship with coopnets)")
    if args.num_samples is not None and args.num_samples <= 0:
        raise UserError("--num-samples must be positive")
    if args.batch_size <= 0:
        raise UserError("--batch-size must be positive")
    if args.metric in ("fid", "kid"):
        from .metrics.inception import inception_path
        inception_path(args.inception)  # missing weights fail now, not after sampling
    if args.metric == "kid":
        from .metrics.fid import is_stats_file
        if is_stats_file(args.ref) and not _has_features(args.ref):
            raise UserError(f"{args.ref} holds statistics only; KID needs reference images (--ref)")
    if args.metric == "mnist-fid":
        from .metrics.mnist_classifier import load_mnist_classifier
        load_mnist_classifier(args.classifier)


def _has_features(path) -> bool:
    with np.load(path, allow_pickle=False) as f:
        return "features" in f.files


def _load(path, args, subset: str = "", key: str = "") -> torch.Tensor:
    from .data import load_images
    return load_images(path, image_size=args.image_size, center_crop=args.center_crop, subset=subset, key=key)


def load_source(args) -> torch.Tensor:
    """SOURCE as uint8 (N, C, H, W): generated from a run, or read from disk."""
    if is_run(args.source):
        from .images import to_uint8
        from .sampling import generate
        n = args.num_samples or DEFAULT_RUN_SAMPLES
        x = generate(args.source, n, mode=args.mode, seed=args.seed, batch_size=args.batch_size,
                     device=args.device)
        if not torch.isfinite(x).all():
            raise UserError(f"samples from {args.source} contain NaN or inf; the run has diverged")
        return to_uint8(x)
    x = _load(args.source, args, key=args.source_key)
    if args.num_samples:
        if args.num_samples > len(x):
            raise UserError(f"--num-samples {args.num_samples} but {args.source} holds only {len(x)} images")
        x = x[:args.num_samples]
    return x


def _ref_stats(args, kind: str) -> dict:
    """Reference statistics for fid/kid (kind 'inception') or mnist-fid (kind 'mnist')."""
    from .metrics.fid import is_stats_file, load_stats
    if is_stats_file(args.ref):
        st = load_stats(args.ref)
        if st["extractor"] and not st["extractor"].startswith(kind):
            raise UserError(f"{args.ref} holds {st['extractor'].split(':')[0]} statistics, "
                            f"not {kind} ones; compute them for --metric {args.metric}")
        if st["extractor"] and st["extractor"] != _extractor(args, kind):
            print(f"warning: {args.ref} was computed with {st['extractor']}, this evaluation uses "
                  f"{_extractor(args, kind)}; the FID may be slightly off", file=sys.stderr)
        return st
    ref = _load(args.ref, args, subset=args.ref_subset, key=args.ref_key)
    if kind == "inception":
        from .metrics.inception import inception_reference_stats
        return inception_reference_stats(ref, args.inception, args.batch_size, _device(args),
                                         threads=args.threads or None, precision=args.precision,
                                         use_cache=not args.no_cache)
    from .metrics.mnist_classifier import mnist_reference_stats
    return mnist_reference_stats(ref, args.classifier, use_cache=not args.no_cache)


def _features(x, args, kind: str) -> np.ndarray:
    if kind == "inception":
        from .metrics.inception import inception_features
        return inception_features(x, args.inception, args.batch_size, _device(args),
                                  threads=args.threads or None, precision=args.precision)
    from .metrics.mnist_classifier import mnist_features
    return mnist_features(x, args.classifier, device=_device(args))


def _device(args) -> torch.device:
    from .distributed import pick_device
    return pick_device(args.device)


def _extractor(args, kind: str) -> str:
    if kind == "inception":
        from .metrics.inception import extractor_id
        return extractor_id(args.inception, args.precision)
    from .metrics.mnist_classifier import extractor_id
    return extractor_id(args.classifier)


def _same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise UserError(f"SOURCE images are {tuple(a.shape[1:])} (C, H, W) but {what} images are "
                        f"{tuple(b.shape[1:])}; use --image-size N, or data with the same channels")


def compute(args, x: torch.Tensor) -> dict:
    """The metric's values for SOURCE images ``x`` (uint8), as a dict for the table and log."""
    from . import metrics as M
    m = args.metric
    if m in ("fid", "kid", "mnist-fid"):
        kind = "mnist" if m == "mnist-fid" else "inception"
        ref = _ref_stats(args, kind)
        feats = _features(x, args, kind)
        if args.save_stats:
            mu, sigma = M.feature_stats(feats)
            from .metrics.features import hash_images
            M.save_stats(args.save_stats, mu, sigma, len(feats), hash_images(x), _extractor(args, kind))
        if m == "kid":
            if "features" not in ref:
                raise UserError(f"{args.ref} holds statistics only; KID needs reference images")
            mean, se = M.kid(feats, ref["features"], args.kid_subsets, args.kid_subset_size, args.seed)
            return {"value": mean, "std_error": se, "ref_count": ref["count"]}
        return {"value": M.fid_from_stats(*M.feature_stats(feats), ref["mu"], ref["sigma"]),
                "ref_count": ref["count"]}
    if m == "is":
        clf = M.load_classifier(args.classifier, _device(args))
        logits = M.classifier_logits(x, clf, args.batch_size, _device(args))
        mean, std = M.inception_score(logits, args.splits, kind="logits")
        return {"value": mean, "std": std, "splits": args.splits}
    ref = _load(args.ref, args, subset=args.ref_subset, key=args.ref_key)
    if m == "parzen":
        val = _load(args.validation, args, subset=args.validation_subset, key=args.validation_key)
        _same_shape(x, ref, "--ref")
        _same_shape(x, val, "--validation")
        kw = {}
        if args.sigmas:
            try:
                kw["sigmas"] = [float(s) for s in args.sigmas.split(",")]
            except ValueError:
                raise UserError(f"--sigmas must be comma-separated numbers, got {args.sigmas!r}") from None
        r = M.parzen_score(x, val, ref, **kw)
        return {"value": r["mean"], "std_error": r["std_error"], "sigma": r["sigma"],
                "validation_ll": r["validation_ll"], "ref_count": len(ref), "validation_count": len(val)}
    _same_shape(x, ref, "--ref")
    if len(x) != len(ref):
        raise UserError(f"{m} compares images one to one, but SOURCE has {len(x)} and --ref {len(ref)}; "
                        "use --num-samples / --ref-subset to match them")
    vals = (M.psnr if m == "psnr" else M.ssim)(x, ref, reduction="none")
    finite = vals[np.isfinite(vals)]
    return {"value": float(np.mean(vals)), "std": float(np.std(finite)) if len(finite) else 0.0,
            "min": float(np.min(vals)), "ref_count": len(ref)}


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, if it is one."""
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def log_path(args) -> Path | None:
    if args.log:
        return Path(args.log)
    if is_run(args.source):
        p = Path(args.source)
        return (p if p.is_dir() else p.parent) / "metrics.jsonl"
    return None


def run(args) -> int:
    """Entry point of ``coopnets eval``; returns the exit code."""
    t0 = time.time()
    _check_args(args)
    x = load_source(args)
    result = compute(args, x)
    run_source = is_run(args.source)
    record = {"metric": args.metric, **result, "source": str(Path(args.source).resolve()),
              "ref": str(Path(args.ref).resolve()) if args.ref else None,
              "ref_subset": args.ref_subset or None, "ref_key": args.ref_key or None,
              "validation": str(Path(args.validation).resolve()) if args.validation else None,
              "num_samples": len(x), "seed": args.seed, "mode": args.mode if run_source else None,
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.time() - t0, 2), "commit": git_commit()}
    record = {k: _json_safe(v) for k, v in record.items()}
    width = max(6, *(len(k) for k in result))
    print(f"{'metric':<{width}}  {args.metric}")
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    path = log_path(args)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"logged to {path}")
    return 0
