"""Parzen-window log-likelihood (Breuleux et al. 2011; the protocol of Goodfellow et al.,
"Generative Adversarial Nets", NeurIPS 2014, reused by CoopNets, TPAMI 2020, Table 3).

A Gaussian kernel density with isotropic bandwidth sigma is centred on each of M generated
samples (pixels in [0, 1], flattened to D values)::

    log p(x) = logsumexp_i( -||x - s_i||^2 / (2 sigma^2) ) - log M - (D / 2) log(2 pi sigma^2)

sigma is chosen on a validation set (MNIST: the last 10,000 training images) from a grid,
and the mean log-likelihood of the test set (with its standard error) is reported, in nats.

Squared distances are ||x||^2 - 2 x.s + ||s||^2 in float64 blocks of ``batch_size`` test
rows x ``batch_size`` sample rows, with a running log-sum-exp, so 10,000 x 10,000 x 784
needs only a few hundred MB; one pass over the distances serves every sigma of the grid.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UserError
from .pixels import unit_pixels

DEFAULT_SIGMAS = np.logspace(-1, 0, 10)


def _flat(x, name: str, pixels: bool) -> torch.Tensor:
    """(N, ...) -> float64 (N, D): pixels (uint8 or floats in [0, 1], checked), or any finite
    vectors when ``pixels`` is False."""
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    if len(shape) < 2 or shape[0] == 0:
        raise UserError(f"parzen: {name} must be a non-empty batch (N, ...), got shape {shape}")
    x = x.detach().cpu() if isinstance(x, torch.Tensor) else x
    if pixels:
        t = unit_pixels(x, f"parzen: {name}")
    else:
        t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        if not torch.isfinite(t).all():
            raise UserError(f"parzen: {name} contains NaN or inf")
    return t.reshape(len(t), -1)


def _log_likelihoods(samples, test, sigmas, batch_size: int, pixels: bool = True) -> np.ndarray:
    """(len(sigmas), N_test) log-densities of each test row under each bandwidth."""
    s, x = _flat(samples, "samples", pixels), _flat(test, "test set", pixels)
    if s.shape[1] != x.shape[1]:
        raise UserError(f"parzen: samples have {s.shape[1]} values each, the test set {x.shape[1]}; "
                        "they must be images of the same size and channels")
    sig = torch.as_tensor(np.asarray(sigmas, np.float64).reshape(-1))
    if len(sig) == 0 or not (sig > 0).all():
        raise UserError("parzen: bandwidths must be positive")
    if batch_size <= 0:
        raise UserError("parzen: batch_size must be positive")
    m, d = s.shape
    inv = (-0.5 / sig**2).view(-1, 1, 1)  # (K, 1, 1)
    s_sq = (s * s).sum(1)
    out = []
    for lo in range(0, len(x), batch_size):
        xb = x[lo:lo + batch_size]
        x_sq = (xb * xb).sum(1, keepdim=True)
        run = torch.full((len(sig), len(xb)), -math.inf, dtype=torch.float64)
        for slo in range(0, m, batch_size):
            sb = s[slo:slo + batch_size]
            d2 = (x_sq - 2.0 * xb @ sb.T + s_sq[slo:slo + batch_size]).clamp_(min=0.0)
            run = torch.logaddexp(run, torch.logsumexp(inv * d2, dim=2))
        out.append(run)
    ll = torch.cat(out, 1) - math.log(m) - 0.5 * d * torch.log(2 * math.pi * sig**2).view(-1, 1)
    return ll.numpy()


def parzen_log_likelihood(samples, test, sigma: float, batch_size: int = 1000,
                          pixels: bool = True) -> np.ndarray:
    """Log-likelihood (nats) of each test example under the Parzen window of ``samples``.

    ``samples`` (M, ...) and ``test`` (N, ...): images as uint8 or floats in [0, 1] (a float
    outside is refused), any trailing shape (flattened); ``pixels=False`` takes any real
    vectors as they are. Returns float64 (N,).
    """
    return _log_likelihoods(samples, test, [sigma], batch_size, pixels)[0]


def select_bandwidth(samples, validation, sigmas=DEFAULT_SIGMAS, batch_size: int = 1000,
                     return_scores: bool = False, pixels: bool = True):
    """The sigma of the grid with the highest mean validation log-likelihood.

    With ``return_scores`` also returns the mean validation log-likelihood of every sigma.
    """
    sigmas = np.asarray(sigmas, np.float64).reshape(-1)
    scores = _log_likelihoods(samples, validation, sigmas, batch_size, pixels).mean(1)
    best = float(sigmas[int(np.argmax(scores))])
    return (best, scores) if return_scores else best


def parzen_score(samples, validation, test, sigmas=DEFAULT_SIGMAS, batch_size: int = 1000,
                 pixels: bool = True) -> dict:
    """Goodfellow et al.'s protocol: sigma from ``validation``, then the test mean log-likelihood.

    Returns dict(mean, std_error, sigma, validation_ll): mean and standard error
    (std / sqrt(N)) of the test log-likelihoods in nats, the chosen sigma, and the mean
    validation log-likelihood at that sigma. A sigma on the edge of the grid is a hint that
    the grid should be widened.
    """
    sigma, scores = select_bandwidth(samples, validation, sigmas, batch_size, True, pixels)
    ll = parzen_log_likelihood(samples, test, sigma, batch_size, pixels)
    se = float(ll.std(ddof=1) / math.sqrt(len(ll))) if len(ll) > 1 else float("nan")
    return {"mean": float(ll.mean()), "std_error": se, "sigma": sigma,
            "validation_ll": float(scores.max())}
