"""Langevin dynamics: one pure function, several log-densities, and the descriptor revision.

    x ← x + (δ²/2) ∇_x log p(x) + δ U,   U ~ N(0, I)

With the descriptor's log-density log p(x) = f(x; θ) − ||x||²/(2s²) this is step D1 of the
paper (s: ``ref_std``, the std of the Gaussian reference); with the generator's log posterior
log p(z | x) = −||x − g(z)||²/(2σ²) − ||z||²/2 it is step G1 and the inference step of
alternating back-propagation (σ: ``residual_std``, the std of the generator's residual).

Gradients are taken with ``torch.autograd.grad`` with respect to the chain state only, so no
parameter gradient is computed or accumulated.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

from .seeding import randn


def langevin(log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_steps: int,
             step_size: float, noise: bool | float = True, generator=None) -> torch.Tensor:
    """Run ``n_steps`` of Langevin dynamics on ``x`` under ``log_prob`` (returns (B,) values).

    Returns the final state, detached. ``generator`` (torch.Generator or ExampleRNG) seeds
    the noise; ``noise=False`` gives gradient ascent on log p with step δ²/2; a float c scales
    the noise to c δ U, which samples the tempered density p^(1/c²) (c = 1 is p itself).
    """
    x = x.detach().clone()
    half_sq, scale = 0.5 * step_size * step_size, float(noise)
    for _ in range(n_steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(log_prob(x).sum(), x)
        u = randn(x.shape, generator, x.device) if scale else None
        x = langevin_update(x.detach(), grad, half_sq, u, step_size * scale)
    return x


def langevin_update(x: torch.Tensor, grad: torch.Tensor, half_sq: float, u, noise_std: float):
    """One update x + (δ²/2) grad + σ_u u in place on x (u = None: no noise; σ_u = δ times the
    noise scale). The eager loop and the CUDA-graphed one (coopnets.fast) share it, so they
    compute the same numbers."""
    x.add_(grad, alpha=half_sq)
    if u is not None:
        x.add_(u, alpha=noise_std)
    return x


def descriptor_log_prob(descriptor, ref_std: float, autocast=None):
    """log p(x; θ) + const = f(x; θ) − ||x||² / (2 s²), per example (s = ``ref_std``)."""
    def log_prob(x):
        with (autocast or nullcontext)():
            f = descriptor(x)
        return f.float() - x.flatten(1).pow(2).sum(1) / (2.0 * ref_std * ref_std)
    return log_prob


def generator_log_posterior(generator, x: torch.Tensor, residual_std: float, mask=None,
                            autocast=None):
    """log p(z | x; α) + const = −||m ⊙ (x − g(z))||² / (2σ²) − ||z||² / 2, per example
    (σ = ``residual_std``).

    ``mask`` (1 = observed pixel, broadcastable to x) restricts the fit to visible pixels,
    which is what pattern completion uses.
    """
    def log_prob(z):
        with (autocast or nullcontext)():
            g = generator(z)
        r = x - g.float()
        if mask is not None:
            r = r * mask
        return (-r.flatten(1).pow(2).sum(1) / (2.0 * residual_std * residual_std)
                - z.flatten(1).pow(2).sum(1) / 2.0)
    return log_prob


def revise(descriptor, x: torch.Tensor, *, ref_std: float, steps: int, step_size: float,
           noise: bool | float = True, rng=None, autocast=None) -> torch.Tensor:
    """Descriptor revision (step D1): ``steps`` Langevin steps of x under p(x; θ). This is how
    every part of coopnets turns generated (or reference) images into descriptor samples."""
    return langevin(descriptor_log_prob(descriptor, ref_std, autocast), x, steps, step_size,
                    noise, rng)
