"""Langevin dynamics against closed forms.

For a Gaussian target with precision P and mean μ, unadjusted Langevin with step δ
(h = δ²/2) keeps the mean μ and has the stationary covariance (P (I − hP/2))⁻¹ exactly, so
the tests compare with that (not with the continuous-time limit) and need no fudge factor.
Tolerances are 5 standard errors of the estimate from the number of chains.
"""
import math

import pytest
import torch

from coopnets.config import resolve
from coopnets.seeding import ExampleRNG
from coopnets.langevin import descriptor_log_prob, generator_log_posterior, langevin, revise


class Linear(torch.nn.Module):
    """f(x) = θ·x, per example."""

    def __init__(self, theta):
        super().__init__()
        self.theta = torch.nn.Parameter(theta)

    def forward(self, x):
        return x.flatten(1) @ self.theta


class Zero(torch.nn.Module):
    """f ≡ 0: the descriptor's reference N(0, s²I) alone."""

    def forward(self, x):
        return x.flatten(1).sum(1) * 0.0


def _check_moments(x, mean, var, n):
    se_mean = (var / n).sqrt()
    se_var = var * math.sqrt(2.0 / (n - 1))
    assert ((x.mean(0) - mean).abs() < 5 * se_mean).all(), (x.mean(0), mean)
    assert ((x.var(0) - var).abs() < 5 * se_var).all(), (x.var(0), var)


def test_linear_descriptor_reaches_gaussian_mean_and_variance():
    s, delta, n = 0.5, 0.1, 20000
    theta = torch.tensor([1.0, -2.0, 0.5, 3.0])
    log_prob = descriptor_log_prob(Linear(theta), s)
    g = torch.Generator().manual_seed(0)
    x = langevin(log_prob, torch.zeros(n, 4), 400, delta, generator=g)
    eps = delta ** 2 / (2 * s ** 2)  # h·P for P = I/s²
    _check_moments(x, s ** 2 * theta, torch.full((4,), s ** 2 / (1 - eps / 2)), n)


def test_scaled_noise_samples_the_tempered_gaussian():
    """Noise c δ U instead of δ U: the chain keeps the mean and its stationary variance is c²
    times the c = 1 one, i.e. it samples p^(1/c²) (N(μ, c² s²) for this Gaussian)."""
    s, delta, n, c = 0.5, 0.1, 20000, 0.4
    theta = torch.tensor([1.0, -2.0, 0.5, 3.0])
    log_prob = descriptor_log_prob(Linear(theta), s)
    x = langevin(log_prob, torch.zeros(n, 4), 400, delta, noise=c,
                 generator=torch.Generator().manual_seed(0))
    eps = delta ** 2 / (2 * s ** 2)
    _check_moments(x, s ** 2 * theta, torch.full((4,), c ** 2 * s ** 2 / (1 - eps / 2)), n)
    one = langevin(log_prob, torch.zeros(8, 4), 5, delta, noise=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one, langevin(log_prob, torch.zeros(8, 4), 5, delta, noise=True,
                                     generator=torch.Generator().manual_seed(1)))


def test_zero_energy_reaches_reference_distribution():
    s, delta, n = 0.3, 0.05, 20000

    x = langevin(descriptor_log_prob(Zero(), s), torch.ones(n, 3), 600, delta,
                 generator=torch.Generator().manual_seed(1))
    eps = delta ** 2 / (2 * s ** 2)
    _check_moments(x, torch.zeros(3), torch.full((3,), s ** 2 / (1 - eps / 2)), n)


def test_noiseless_langevin_climbs_to_the_mode():
    s, theta = 0.5, torch.tensor([1.0, -1.0])
    x = langevin(descriptor_log_prob(Linear(theta), s), torch.zeros(3, 2), 2000, 0.1, noise=False)
    torch.testing.assert_close(x, (s ** 2 * theta).expand(3, 2), rtol=1e-4, atol=1e-5)


class LinearGenerator(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)  # (D, d)

    def forward(self, z):
        return z @ self.w.T


def test_linear_generator_drift_is_closed_form():
    torch.manual_seed(0)
    w, sigma = torch.randn(6, 3), 0.7
    x, z = torch.randn(5, 6), torch.randn(5, 3).requires_grad_(True)
    lp = generator_log_posterior(LinearGenerator(w), x, sigma)
    (grad,) = torch.autograd.grad(lp(z).sum(), z)
    expected = (x - z @ w.T) @ w / sigma ** 2 - z
    torch.testing.assert_close(grad, expected.detach())
    # one noiseless step moves by exactly (δ²/2) · drift
    step = langevin(lp, z, 1, 0.2, noise=False)
    torch.testing.assert_close(step, (z + 0.02 * expected).detach())


def test_linear_generator_chain_matches_gaussian_posterior():
    torch.manual_seed(0)
    w, sigma, delta, n = torch.randn(5, 2) * 0.5, 0.8, 0.3, 20000
    x = torch.randn(1, 5).expand(n, 5)
    precision = w.T @ w / sigma ** 2 + torch.eye(2)
    mean = torch.linalg.solve(precision, w.T @ x[0] / sigma ** 2)
    h = delta ** 2 / 2
    cov = torch.linalg.inv(precision @ (torch.eye(2) - h * precision / 2))
    z = langevin(generator_log_posterior(LinearGenerator(w), x, sigma), torch.zeros(n, 2), 300,
                 delta, generator=torch.Generator().manual_seed(3))
    _check_moments(z, mean, torch.diagonal(cov), n)
    emp = torch.cov(z.T)
    assert (emp - cov).abs().max() < 5 * cov.diagonal().max() * math.sqrt(2.0 / n)


def test_langevin_leaves_parameter_gradients_alone():
    net = Linear(torch.tensor([1.0, 2.0]))
    langevin(descriptor_log_prob(net, 1.0), torch.zeros(4, 2), 3, 0.1)
    assert net.theta.grad is None


def test_seeded_chains_repeat_and_example_rng_is_batch_independent():
    net = Linear(torch.tensor([1.0, 2.0]))
    lp = descriptor_log_prob(net, 1.0)
    a = langevin(lp, torch.zeros(4, 2), 5, 0.1, generator=torch.Generator().manual_seed(7))
    b = langevin(lp, torch.zeros(4, 2), 5, 0.1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    full = langevin(lp, torch.zeros(6, 2), 5, 0.1, generator=ExampleRNG(3, range(6)))
    part = langevin(lp, torch.zeros(2, 2), 5, 0.1, generator=ExampleRNG(3, [4, 5]))
    torch.testing.assert_close(full[4:], part)


def test_the_texture_preset_samples_at_the_released_codes_langevin_scale():
    """The released texture code runs 30 Langevin steps with δ/s = 0.3 (pixels in [-1, 1]). Under
    f ≡ 0 a step is x ← a·x + δU with a = 1 − δ²/2s², so after T steps from x0 the chains have
    mean a^T·x0 and variance δ²(1 − a^2T)/(1 − a²): the preset's 30 steps take a sample three
    quarters of the way to the reference's mean (a^30 = 0.25), which the preset's old s = 1,
    δ = 0.01 (a^30 = 0.9985) did not: its revision was noise."""
    cfg = resolve("texture")
    assert cfg.des_step_size / cfg.ref_std == pytest.approx(0.3) and cfg.des_steps == 30
    n, x0, delta, T = 20000, 0.5, cfg.des_step_size, cfg.des_steps
    x = revise(Zero(), torch.full((n, 1), x0, dtype=torch.float64), ref_std=cfg.ref_std, steps=T,
               step_size=delta, rng=torch.Generator().manual_seed(0))
    a = 1 - delta ** 2 / (2 * cfg.ref_std ** 2)
    assert a ** T < 0.5  # the pull of 30 steps, not their noise, moves the sample
    mean, var = a ** T * x0, delta ** 2 * (1 - a ** (2 * T)) / (1 - a ** 2)
    _check_moments(x, torch.tensor([mean], dtype=x.dtype), torch.tensor([var], dtype=x.dtype), n)
