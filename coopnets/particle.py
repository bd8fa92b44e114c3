"""wGCN / wFRAME / GGCN (seed 004): the JKO particle update and the hidden-space descriptor.

This is a documented reconstruction (docs/ggcn.md): the paper's method sections are not
readable, so every formula below follows ../shared/docs/ggcn.md §3.4 and §4.2-4.5.

The sampler, ``jko``, has the shape of ``langevin``. One step of time τ = δ²/2 is the
operator split of the JKO (Wasserstein-proximal) step of the free energy KL(p || p_θ):

    y = prox_{τU}(x) + √(2τ) ε = prox_{τU}(x) + δ ε,    prox_{τU}(x) = argmin_y U(y) + ||y − x||²/(2τ)

with U = −log p. The prox is computed by ``inner_steps`` (K_in) gradient steps

    y ← y − η [∇U(y) + (y − x)/τ]                                  (iterative, ggcn.md §3.4 a)

or in the semi-implicit form, implicit in the Gaussian reference N(0, s²I) only,

    y = (x + τ ∇f(x)) / (1 + τ/s²),   ∇f = ∇log p + x/s²             (semi-implicit, §3.4 b)

One inner step of size η = τ from y = x is x + (δ²/2)∇log p(x): the Langevin step, bit for bit.

Step functions (the standard shape of ``coopnets.algorithms``):
  wgcn_step   Algorithm D with JKO chains (wGCN; wFRAME with --algorithm wframe)
  ggcn_step   GGCN: hidden-space JKO chains in z under exp(f(g(z))) N(z; 0, I), amortized
              learning of the upsampler g from where the chains end, alternating θ and α;
              g also fits the data by Algorithm G (it is the base f tilts; ggcn_infer_steps)
FRAME (--algorithm frame) is Algorithm D itself with the descriptor's filter bank frozen
(``freeze_filters``); every step here logs f_obs, f_syn, energy (mean U of the particles)
and w2_step (mean ||x̃_end − x̃_start||², the transport of the chains this iteration).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

from .langevin import descriptor_log_prob
from .seeding import randn

PROX = ("iterative", "semi-implicit", "explicit")
FROZEN_FILTERS = ("frame", "wframe")  # algorithms whose descriptor learns only its top layer


# ---- the sampler ------------------------------------------------------------------------------
def _view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def prox_step_bound(step_size: float, ref_std: float | None = None, lipschitz: float = 0.0) -> float:
    """η* = 1 / (1/τ + 1/s² + Lip(∇f)), τ = δ²/2: the inner step that is exact for a linear f
    (one step reaches the prox) and safe for a smooth one. Inner steps of 2η* or more diverge
    even for a linear f."""
    tau = 0.5 * step_size * step_size
    return 1.0 / (1.0 / tau + (1.0 / ref_std ** 2 if ref_std else 0.0) + lipschitz)


def jko(log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_steps: int,
        step_size: float, noise: bool | float = True, generator=None, *, inner_steps: int = 3,
        inner_step_size: float | None = None, prox: str = "iterative",
        ref_std: float | None = None) -> torch.Tensor:
    """``n_steps`` JKO particle steps of time τ = δ²/2 (δ = ``step_size``) under ``log_prob``.

    prox: "iterative" (K_in = ``inner_steps`` gradient steps on the prox objective, the first
    of size ``inner_step_size``, default ``prox_step_bound``; later ones shrink per example to
    1/(1/τ + L̂), L̂ the secant estimate of the curvature of U along the last inner step),
    "semi-implicit" (needs ``ref_std``: log_prob = f − ||x||²/(2 s²)), or "explicit" (the
    Langevin step). Returns the final state, detached; noise as in ``langevin``.
    """
    if prox not in PROX:
        raise ValueError(f"prox must be one of {PROX}, got {prox!r}")
    if prox == "semi-implicit" and not ref_std:
        raise ValueError("the semi-implicit prox needs ref_std (log_prob = f − ||x||²/(2 s²))")
    if prox == "iterative" and inner_steps < 1:
        raise ValueError(f"inner_steps must be at least 1, got {inner_steps}")
    tau = 0.5 * step_size * step_size
    eta = inner_step_size if inner_step_size else prox_step_bound(step_size, ref_std)
    if prox == "iterative" and eta >= 2.0 * prox_step_bound(step_size, ref_std):
        raise ValueError(f"inner step {eta:.3g} diverges: it must be below "
                         f"{2 * prox_step_bound(step_size, ref_std):.3g} (2 / (1/τ + 1/s²))")

    def grad_log_prob(y):
        y = y.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(log_prob(y).sum(), y)
        return g

    x = x.detach().clone()
    for _ in range(n_steps):
        if prox == "explicit":
            x = x.add_(grad_log_prob(x), alpha=tau)
        elif prox == "semi-implicit":
            grad_f = grad_log_prob(x).add_(x, alpha=1.0 / ref_std ** 2)
            x = x.add_(grad_f, alpha=tau).div_(1.0 + tau / ref_std ** 2)
        else:
            x = _iterative_prox(grad_log_prob, x, tau, eta, inner_steps)
        if noise:
            x.add_(randn(x.shape, generator, x.device), alpha=step_size * float(noise))
    return x


def _iterative_prox(grad_log_prob, x, tau: float, eta: float, inner_steps: int) -> torch.Tensor:
    """argmin_y U(y) + ||y − x||²/(2τ) by gradient descent from y = x (ggcn.md §3.4 a)."""
    y, prev = x.clone(), None
    step = eta  # a float for the first inner step (so K_in = 1, η = τ is Langevin bit for bit)
    for k in range(inner_steps):
        g = grad_log_prob(y)  # ∇log p(y) = −∇U(y)
        if prev is not None:  # secant curvature of U along the last move, per example
            dy, dg = (y - prev[0]).flatten(1), (g - prev[1]).flatten(1)
            lip = dg.norm(dim=1) / dy.norm(dim=1).clamp_min(1e-30)
            step = _view(torch.clamp(1.0 / (1.0 / tau + lip), max=eta), y)
        prev = (y, g)
        move = g - (y - x) / tau  # −∇ of the prox objective
        y = y + step * move if k else y.clone().add_(move, alpha=step)
    return y.detach()


def jko_revise(descriptor, x: torch.Tensor, *, ref_std: float, steps: int, step_size: float,
               inner_steps: int = 3, inner_step_size: float | None = None,
               prox: str = "iterative", noise: bool | float = True, rng=None, autocast=None):
    """The JKO counterpart of ``revise``: ``steps`` particle steps of x under p(x; θ)."""
    return jko(descriptor_log_prob(descriptor, ref_std, autocast), x, steps, step_size, noise,
               rng, inner_steps=inner_steps, inner_step_size=inner_step_size, prox=prox,
               ref_std=ref_std)


def hidden_log_prob(descriptor, upsampler, autocast=None):
    """GGCN's hidden-space model, per example: log p(z) + const = f(g(z)) − ||z||²/2
    (ggcn.md §4.2: the normal reference N(0, I) pushed through the upsampler g)."""
    def log_prob(z):
        with (autocast or nullcontext)():
            f = descriptor(upsampler(z).float())
        return f.float() - z.flatten(1).pow(2).sum(1) / 2.0
    return log_prob


# ---- config glue -------------------------------------------------------------------------------
def _jko_kw(cfg) -> dict:
    return dict(inner_steps=cfg.jko_inner_steps, inner_step_size=cfg.jko_inner_step or None,
                prox=cfg.jko_prox)


def revise_x(des, x, cfg, rng, amp=None, steps=None):
    """x-space JKO chains with the run's settings (wGCN's D1, GGCN's optional refinement)."""
    return jko_revise(des, x, ref_std=cfg.ref_std, steps=cfg.des_steps if steps is None else steps,
                      step_size=cfg.des_step_size, noise=cfg.des_noise_level, rng=rng, autocast=amp,
                      **_jko_kw(cfg))


def revise_z(des, gen, z, cfg, rng, amp=None):
    """GGCN's hidden-space JKO chains: l_z = gen_steps steps of size gen_step_size under
    f(g(z)) − ||z||²/2 (the reference in z is N(0, I), so s = 1 for the semi-implicit form)."""
    return jko(hidden_log_prob(des, gen, amp), z, cfg.gen_steps, cfg.gen_step_size, cfg.gen_noise,
               rng, ref_std=1.0, **_jko_kw(cfg))


def hidden_gap_limit(cfg, z: torch.Tensor, x: torch.Tensor) -> float:
    """GGCN's bound on f(data) − f(syn): ``cfg.des_gap_limit`` per latent dimension, in units of
    the hidden reference N(0, I) (ggcn_gap_units "latent"). The x-space limit ("pixel", per pixel
    in units of 1/s², how GGCN runs before it computed) is ~10⁵ at s = 0.016 and never binds on
    energies of the hidden model's scale, ~d/2."""
    if cfg.ggcn_gap_units == "pixel":
        return gap_limit(cfg, x)
    return cfg.des_gap_limit * z[0].numel()


def freeze_filters(des: torch.nn.Module) -> None:
    """FRAME: keep the descriptor's filter bank (every layer below the top) fixed at its
    initialisation, so that only the top layer's weights λ are learned:
    f(x) = Σ_k λ_k · φ_k(x), an exponential family on fixed filter responses (ggcn.md §3.2)."""
    for p in unwrap(des).body.parameters():
        p.requires_grad_(False)


def _sq(x):  # (B, ...) -> (B,) squared norms
    return x.flatten(1).pow(2).sum(1)


def _energy_stats(loss, f_obs, f_syn, end, start, ref_var: float) -> dict:
    """The per-step record of ggcn.md §5: mean f(observed), mean f(synthesized), the mean
    energy U = ||x̃||²/(2 s²) − f(x̃) of the particles (in the space the chains run in), and the
    empirical W₂ step: the mean squared transport of the chains this iteration."""
    return {"des_loss": loss, "f_gap": f_obs.mean() - f_syn.mean(), "f_obs": f_obs.mean(),
            "f_syn": f_syn.mean(), "energy": (_sq(end) / (2.0 * ref_var) - f_syn).mean(),
            "w2_step": _sq(end - start).mean(),
            "langevin_move": _rms_move(end, start)}


# ---- step functions ----------------------------------------------------------------------------
def wgcn_step(nets: Nets, batch: Batch, state: dict, cfg, rng=None) -> StepResult:
    """wGCN (wFRAME with frozen filters): Algorithm D with the JKO particle update."""
    amp = amp_context(cfg, batch.x.device)
    x_init = descriptor_chain_start(cfg, batch.x, state.get("chains"), rng)
    # 1. l_D JKO steps: x̃ ← prox_{τU}(x̃) + δ ε (ggcn.md §3.4), gradients into x only.
    x_syn = revise_x(unwrap(nets.des), x_init, cfg, rng, amp_context(cfg, batch.x.device, "langevin"))
    # 2. θ: the MLE moment-matching update, unchanged (the "statistical consistency").
    loss, f_obs, f_syn, _ = update_descriptor(nets.des, nets.opt_des, batch.x, x_syn, amp,
                                              gap_limit(cfg, batch.x), cfg.des_gap_shape)
    stats = _energy_stats(loss, f_obs, f_syn, x_syn, x_init, cfg.ref_std ** 2)
    state = {**state, "chains": x_syn if cfg.des_init == "persistent" else None}
    return StepResult(stats, state, {"x_syn": x_syn})


def ggcn_step(nets: Nets, batch: Batch, state: dict, cfg, rng=None) -> StepResult:
    """GGCN (ggcn.md §4.5): hidden-space JKO chains, then the symmetric alternating updates."""
    amp, chain_amp = amp_context(cfg, batch.x.device), amp_context(cfg, batch.x.device, "langevin")
    des, gen = unwrap(nets.des), unwrap(nets.gen)
    # 1. z⁰ ~ N(0, I): fresh, amortized starts (no persistent chains).
    z0 = randn((cfg.num_chains, *nets.latent_shape), rng, batch.x.device)
    # 2. l_z JKO steps in hidden space on U(z) = ||z||²/2 − f(g(z)).
    z = revise_z(des, gen, z0, cfg, rng, chain_amp)
    # 3. x̃ = g(z), optionally refined by l_D JKO steps in x (0 in the presets).
    with torch.no_grad(), chain_amp():
        x_syn = gen(z).float()
    if cfg.des_steps:
        x_syn = revise_x(des, x_syn, cfg, rng, chain_amp)
    # 4. θ: f learns from the chains' samples as negatives (exact for the image-space model),
    # its gap bounded in the units of the space the chains run in (hidden_gap_limit).
    loss, f_obs, f_syn, _ = update_descriptor(nets.des, nets.opt_des, batch.x, x_syn, amp,
                                              hidden_gap_limit(cfg, z0, batch.x), cfg.des_gap_shape)
    # 5. α (amortization): g(z⁰) regresses on where the chains ended, sg(x̃).
    # 6. α (the base q = g#N(0, I) fits the data; ggcn_infer_steps > 0): Algorithm G's inference
    # of each observed example's z, warm-started from its last one; g(z) regresses on the example.
    # One generator pass for both (one forward per backward under DDP).
    z_obs, stats = None, {}
    if cfg.ggcn_infer_steps:
        z_obs = infer_warm(nets, batch, state, cfg, chain_amp, rng, cfg.ggcn_infer_steps,
                           cfg.ggcn_infer_step)
    with amp():
        out = nets.gen(z0 if z_obs is None else torch.cat([z0, z_obs]))
    x_amortized = out[: len(z0)]
    gen_loss = generator_loss(x_syn, x_amortized, cfg.residual_std)
    if z_obs is not None:
        fit_loss = generator_loss(batch.x, out[len(z0):], cfg.residual_std)
        gen_loss = gen_loss + fit_loss
        stats["fit_loss"] = fit_loss.detach()
    nets.opt_gen.zero_grad(set_to_none=True)
    gen_loss.backward()
    nets.opt_gen.step()
    stats = {**_energy_stats(loss, f_obs, f_syn, z, z0, 1.0), **stats}
    stats["gen_loss"] = gen_loss.detach()
    return StepResult(stats, state, {"x_gen": x_amortized.detach().float(), "x_rev": x_syn})


# ---- sampling ----------------------------------------------------------------------------------
@torch.no_grad()
def _decode(gen, z):
    return gen(z).float()


def revised(des, gen, z, cfg, rng):
    """GGCN's sample from latents z: hidden-space chains, decode, l_D x-space steps."""
    x = _decode(gen, revise_z(des, gen, z, cfg, rng))
    return revise_x(des, x, cfg, rng) if cfg.des_steps else x


def sample_batch(des, gen, indices, *, mode, seed, cfg, latent_shape, image_shape, des_steps):
    """Per-example seeded samples of a wgcn/wframe/ggcn run (``coopnets.sampling`` modes):
    gen = g(z⁰) (GGCN's amortized one-pass sample), revise = GGCN's chain (hidden JKO, decode,
    l_D x-space steps), des = x-space JKO chains from N(0, s²I) for ``des_steps`` steps."""
    from .seeding import ExampleRNG
    device = next(des.parameters()).device
    rng = ExampleRNG(seed, indices, device)
    if mode == "des":
        x = cfg.ref_std * rng.randn((len(indices), *image_shape))
        return revise_x(des, x, cfg, rng, steps=des_steps)
    z = rng.randn((len(indices), *latent_shape))
    if mode == "revise":
        z = revise_z(des, gen, z, cfg, rng)
    x = _decode(gen, z)
    if mode == "revise" and des_steps:
        x = revise_x(des, x, cfg, rng, steps=des_steps)
    return x.detach()


# Imported last: algorithms.py registers wgcn_step and ggcn_step in STEPS by importing this
# module, so either module may be imported first.
from .algorithms import (Batch, Nets, StepResult, _rms_move, amp_context,  # noqa: E402
                         descriptor_chain_start, gap_limit, generator_loss, infer_warm,
                         unwrap, update_descriptor)
