"""Fréchet Inception Distance (FID) and Kernel Inception Distance (KID) on feature vectors.

FID (Heusel et al., "GANs trained by a two time-scale update rule converge to a local Nash
equilibrium", NeurIPS 2017) is the Fréchet distance between Gaussian fits of two feature
sets::

    FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

Matrix square root: only the trace of (S1 S2)^{1/2} is needed, and it is computed from
eigenvalues, never with ``scipy.linalg.sqrtm``. S1 S2 is similar to the symmetric positive
semi-definite matrix M = S1^{1/2} S2 S1^{1/2} (AB and BA have the same eigenvalues), so

    Tr (S1 S2)^{1/2} = sum_i sqrt(max(lambda_i(M), 0)),

with S1^{1/2} taken from ``numpy.linalg.eigh`` (negative round-off eigenvalues clipped to 0).
This is real-valued and well defined for singular covariances (fewer samples than feature
dimensions), where the sqrtm route needs an eps*I retry and discards imaginary parts.

KID (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018) is the unbiased estimate of the
squared MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
subsets. All arithmetic is float64.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError


def as_features(x, name: str = "features") -> np.ndarray:
    """A finite float64 (N, D) array with N >= 2, or a UserError saying what is wrong."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise UserError(f"{name}: expected a 2-D array (N, D) of feature vectors, got shape {x.shape}")
    if len(x) < 2:
        raise UserError(f"{name}: need at least 2 feature vectors, got {len(x)}")
    if not np.isfinite(x).all():
        raise UserError(f"{name}: contains NaN or inf; the images or the feature extractor are broken")
    return x


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of a feature set, float64."""
    f = as_features(feats)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((S1 S2)^{1/2}) for symmetric PSD S1, S2, via the eigenvalues of S1^{1/2} S2 S1^{1/2}."""
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64, eigen-based)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise UserError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} "
                        f"vs {s2.shape}; both sides must come from the same feature extractor")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, s1, s2)):
        raise UserError("feature statistics contain NaN or inf; recompute them")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)
    return float(max(value, 0.0))  # tiny negative values are round-off


def fid(feats_a, feats_b) -> float:
    """FID between two feature sets (N1, D) and (N2, D)."""
    a, b = as_features(feats_a, "first feature set"), as_features(feats_b, "second feature set")
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feature sets have different dimensions ({a.shape[1]} vs {b.shape[1]})")
    return fid_from_stats(*feature_stats(a), *feature_stats(b))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3, the KID kernel."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between equal-size samples x, y (m, d) with the cubic kernel."""
    m = len(x)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    off = m * (m - 1)
    return float((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
                 - 2.0 * kxy.mean())


def kid(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID: mean of the unbiased MMD^2 over ``subsets`` random subsets, and its standard error.

    Each subset draws m = min(subset_size, N1, N2) rows without replacement from each set
    (as in Bińkowski et al. 2018). The standard error is std(ddof=1) / sqrt(subsets); subsets
    overlap, so it is an estimate of the Monte Carlo spread, and it is NaN for one subset.
    """
    a, b = as_features(feats_a, "first feature set"), as_features(feats_b, "second feature set")
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feature sets have different dimensions ({a.shape[1]} vs {b.shape[1]})")
    if subsets < 1 or subset_size < 2:
        raise UserError("KID needs subsets >= 1 and subset_size >= 2")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    vals = np.array([mmd2_unbiased(a[rng.choice(len(a), m, replace=False)],
                                   b[rng.choice(len(b), m, replace=False)]) for _ in range(subsets)])
    se = float(vals.std(ddof=1) / np.sqrt(subsets)) if subsets > 1 else float("nan")
    return float(vals.mean()), se


def save_stats(path, mu, sigma, count: int, source_hash: str = "", extractor: str = "",
               features=None) -> Path:
    """Write feature statistics to an ``.npz`` (mu, sigma, count, source_hash, extractor[, features]).

    The file is written to a temporary name and renamed, so a reader never sees half of it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    extra = {} if features is None else {"features": np.asarray(features, np.float32)}
    np.savez(tmp, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
             count=np.int64(count), source_hash=np.str_(source_hash), extractor=np.str_(extractor),
             **extra)
    os.replace(tmp, path)
    return path


def is_stats_file(path) -> bool:
    """True when ``path`` is an ``.npz`` holding ``mu`` and ``sigma`` (written by save_stats)."""
    p = Path(path)
    if p.suffix.lower() != ".npz" or not p.is_file():
        return False
    try:
        with np.load(p, allow_pickle=False) as f:
            return "mu" in f.files and "sigma" in f.files
    except (OSError, ValueError):
        return False


def load_stats(path) -> dict:
    """Read a statistics ``.npz``: dict(mu, sigma, count, source_hash, extractor[, features])."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"statistics file {p} does not exist")
    try:
        with np.load(p, allow_pickle=False) as f:
            if "mu" not in f.files or "sigma" not in f.files:
                raise UserError(f"{p} is not a statistics file (it has {f.files}, needs mu and sigma)")
            out = {"mu": f["mu"].astype(np.float64), "sigma": f["sigma"].astype(np.float64),
                   "count": int(f["count"]) if "count" in f.files else 0,
                   "source_hash": str(f["source_hash"]) if "source_hash" in f.files else "",
                   "extractor": str(f["extractor"]) if "extractor" in f.files else ""}
            if "features" in f.files:
                out["features"] = f["features"].astype(np.float64)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read statistics file {p}: {e}") from None
    d = out["mu"].shape[0] if out["mu"].ndim == 1 else -1
    if d < 1 or out["sigma"].shape != (d, d):
        raise UserError(f"{p}: mu {out['mu'].shape} and sigma {out['sigma'].shape} do not fit together")
    return out
