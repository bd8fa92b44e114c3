"""Scoring samples: one call for every metric, with explicit parameters.

    evaluate(samples, "fid", ref="cifar10-train.zip", inception="inception.pt")
    evaluate(samples, "parzen", ref=x_test, validation=x_valid)
    evaluate(samples, "psnr", ref=originals)

``samples`` and ``ref``/``validation`` are uint8 (N, C, H, W) tensors or arrays, floats in
[0, 1], or paths that ``coopnets.data.load_images`` reads (folder, zip, .npz/.npy, IDX); for
fid and mnist-fid ``ref`` may also be an ``.npz`` of statistics (mu, sigma). ``load_samples``
turns a run, a checkpoint or a path into uint8 samples first.

Metrics (see ``coopnets.metrics``):
  fid, kid     Inception-v3 pool3 features (local TorchScript, ``inception``); reference
               statistics are cached by a hash of the reference pixels (``$COOPNETS_CACHE``)
  mnist-fid    FID on the features of the shipped MNIST classifier (``classifier``: other weights)
  is           Inception Score from a user-supplied TorchScript classifier (``classifier``)
  parzen       Parzen-window log-likelihood: bandwidth chosen on ``validation``, scored on ``ref``
  psnr, ssim   sample i against reference image i (same count and shape)
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

METRICS = ("fid", "kid", "is", "parzen", "mnist-fid", "psnr", "ssim")
NEEDS_REF = {"fid", "kid", "parzen", "mnist-fid", "psnr", "ssim"}
DEFAULT_RUN_SAMPLES = 10000


@dataclass(frozen=True)
class ImageSource:
    """How to read an image set from disk: which part of it, and at what size."""
    subset: str = ""  # START:STOP
    key: str = ""  # array name in an .npz
    image_size: int = 0  # resize to N x N (0: as stored)
    center_crop: bool = False

    def read(self, path) -> torch.Tensor:
        from .data import load_images
        return load_images(path, image_size=self.image_size, center_crop=self.center_crop,
                           subset=self.subset, key=self.key)


def is_run(path) -> bool:
    """A run folder or a checkpoint file (as opposed to images)."""
    p = Path(path)
    return (p.is_dir() and ((p / "config.json").is_file() or (p / "latest.pt").is_file())) or (
        p.is_file() and p.suffix == ".pt")


def check_inputs(metric: str, ref=None, validation=None, *, inception=None, classifier=None) -> None:
    """Everything that can be checked before minutes of sampling or feature extraction."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if metric in NEEDS_REF and ref is None:
        raise UserError(f"--metric {metric} needs --ref PATH (reference images; ref= in Python)")
    for what, value in (("--ref", ref), ("--validation", validation)):
        if isinstance(value, (str, Path)) and not Path(value).exists():
            raise UserError(f"{what} {value} does not exist")
    if metric == "parzen" and validation is None:
        raise UserError("metric parzen needs validation images that choose the bandwidth (--validation PATH)")
    if metric == "is" and not classifier:
        raise UserError("metric is needs a classifier (--classifier PATH): a TorchScript file mapping "
                        "images in [-1, 1] to logits (no Inception classification weights ship with coopnets)")
    if metric in ("fid", "kid"):
        from .metrics.inception import inception_path
        inception_path(inception)  # missing weights fail now, not after sampling
    if metric == "kid" and _is_stats(ref) and not _has_features(ref):
        raise UserError(f"{ref} holds statistics only; KID needs reference images")
    if metric == "mnist-fid":
        from .metrics.mnist_classifier import load_mnist_classifier
        load_mnist_classifier(classifier)


def _is_stats(ref) -> bool:
    from .metrics.fid import is_stats_file
    return isinstance(ref, (str, Path)) and is_stats_file(ref)


def _has_features(path) -> bool:
    with np.load(path, allow_pickle=False) as f:
        return "features" in f.files


def load_samples(source, num: int | None = None, *, mode: str = "revise", seed: int = 0,
                 batch_size: int = 100, device="cpu", read: ImageSource = ImageSource(),
                 progress: bool = True, ema: bool = True) -> torch.Tensor:
    """uint8 (N, C, H, W) samples: generated from a run or checkpoint (``num``, default 10,000,
    seeded per example and rounded exactly as saved PNGs would be), or the first ``num``
    images of a path, or a tensor/array given as is. ``ema``: as in ``coopnets.generate``."""
    if isinstance(source, (str, Path)):
        if not Path(source).exists():
            raise UserError(f"SOURCE {source} does not exist")
        if is_run(source):
            from .images import to_uint8
            from .sampling import generate
            x = generate(source, num or DEFAULT_RUN_SAMPLES, mode=mode, seed=seed,
                         batch_size=batch_size, device=str(device), progress=progress, ema=ema)
            if not torch.isfinite(x).all():
                raise UserError(f"samples from {source} contain NaN or inf; the run has diverged")
            return to_uint8(x)
        x = read.read(source)
    else:
        x = torch.as_tensor(np.asarray(source)) if not isinstance(source, torch.Tensor) else source
    if num:
        if num > len(x):
            raise UserError(f"{num} samples asked for, but {source if isinstance(source, (str, Path)) else 'the input'} "
                            f"holds only {len(x)} images")
        x = x[:num]
    return x


def _images(value, read: ImageSource):
    return read.read(value) if isinstance(value, (str, Path)) else value


def _same_shape(a, b, what: str) -> None:
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise UserError(f"samples are {tuple(a.shape[1:])} (C, H, W) but {what} images are "
                        f"{tuple(b.shape[1:])}; use --image-size N, or data with the same channels")


def evaluate(samples, metric: str, ref=None, *, validation=None, ref_read: ImageSource = ImageSource(),
             validation_read: ImageSource = ImageSource(), inception=None, classifier=None,
             batch_size: int = 100, device="cpu", precision: str = "fp32", threads: int | None = None,
             use_cache: bool = True, save_stats=None, kid_subsets: int = 100,
             kid_subset_size: int = 1000, splits: int = 10, sigmas=None, seed: int = 0) -> dict:
    """The metric's values for ``samples`` (uint8 or [0, 1] floats, (N, C, H, W)) as a dict with
    at least ``value``. See the module docstring for what each metric needs."""
    from . import metrics as M
    check_inputs(metric, ref, validation, inception=inception, classifier=classifier)
    device = torch.device(device)
    x = samples
    if metric in ("fid", "kid", "mnist-fid"):
        kind = "mnist" if metric == "mnist-fid" else "inception"
        if _is_stats(ref):
            st = _load_stats(ref, kind, _extractor(kind, inception, classifier, precision), metric)
        elif kind == "inception":
            st = M.inception_reference_stats(_images(ref, ref_read), inception, batch_size, device,
                                             threads=threads, precision=precision, use_cache=use_cache)
        else:
            st = M.mnist_reference_stats(_images(ref, ref_read), classifier, use_cache=use_cache)
        if kind == "inception":
            feats = M.inception_features(x, inception, batch_size, device, threads=threads,
                                         precision=precision)
        else:
            feats = M.mnist_features(x, classifier, device=device)
        if save_stats:
            from .metrics.features import hash_images
            M.save_stats(save_stats, *M.feature_stats(feats), len(feats), hash_images(x),
                         _extractor(kind, inception, classifier, precision))
        if metric == "kid":
            if "features" not in st:
                raise UserError(f"{ref} holds statistics only; KID needs reference images")
            mean, se = M.kid(feats, st["features"], kid_subsets, kid_subset_size, seed)
            return {"value": mean, "std_error": se, "ref_count": st["count"]}
        return {"value": M.fid_from_stats(*M.feature_stats(feats), st["mu"], st["sigma"]),
                "ref_count": st["count"]}
    if metric == "is":
        clf = M.load_classifier(classifier, device)
        mean, std = M.inception_score(M.classifier_logits(x, clf, batch_size, device), splits,
                                      kind="logits")
        return {"value": mean, "std": std, "splits": splits}
    ref_x = _images(ref, ref_read)
    _same_shape(x, ref_x, "reference")
    if metric == "parzen":
        val = _images(validation, validation_read)
        _same_shape(x, val, "validation")
        kw = {"sigmas": list(sigmas)} if sigmas else {}
        r = M.parzen_score(x, val, ref_x, **kw)
        return {"value": r["mean"], "std_error": r["std_error"], "sigma": r["sigma"],
                "validation_ll": r["validation_ll"], "ref_count": len(ref_x),
                "validation_count": len(val)}
    if len(x) != len(ref_x):
        raise UserError(f"{metric} compares images one to one, but there are {len(x)} samples and "
                        f"{len(ref_x)} reference images; use --num-samples / --ref-subset to match them")
    vals = (M.psnr if metric == "psnr" else M.ssim)(x, ref_x, reduction="none")
    finite = vals[np.isfinite(vals)]
    return {"value": float(np.mean(vals)), "std": float(np.std(finite)) if len(finite) else 0.0,
            "min": float(np.min(vals)), "ref_count": len(ref_x)}


def _load_stats(path, kind: str, extractor: str, metric: str) -> dict:
    from .metrics.fid import load_stats
    st = load_stats(path)
    if st["extractor"] and not st["extractor"].startswith(kind):
        raise UserError(f"{path} holds {st['extractor'].split(':')[0]} statistics, not {kind} ones; "
                        f"compute them for metric {metric}")
    if st["extractor"] and st["extractor"] != extractor:
        print(f"warning: {path} was computed with {st['extractor']}, this evaluation uses "
              f"{extractor}; the FID may be slightly off", file=sys.stderr)
    return st


def _extractor(kind: str, inception, classifier, precision: str) -> str:
    if kind == "inception":
        from .metrics.inception import extractor_id
        return extractor_id(inception, precision)
    from .metrics.mnist_classifier import extractor_id
    return extractor_id(classifier)


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, if it is one."""
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
