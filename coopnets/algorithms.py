"""The three learning algorithms as step functions; each returns a dict of floats for logging.

descriptor_step  Algorithm D: Langevin from the given chains (D1), then update θ (D2).
abp_step         Algorithm G: Langevin inference of each example's z (G1), then update α (G2).
coop_step        CoopNets: G0, D1, optional G1, D2, G2 (docs/coopnets.md, Section 3).

Losses are small named functions so that the update each step makes is easy to read.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from .langevin import descriptor_log_prob, generator_log_posterior, langevin, randn


def descriptor_loss(f_obs: torch.Tensor, f_syn: torch.Tensor) -> torch.Tensor:
    """mean_j f(x̃_j) − mean_i f(x_i): its gradient is minus the log-likelihood gradient."""
    return f_syn.mean() - f_obs.mean()


def generator_loss(target: torch.Tensor, g: torch.Tensor, sigma: float) -> torch.Tensor:
    """mean_j ||target_j − g(z_j)||² / (2σ²)."""
    return (target - g.float()).flatten(1).pow(2).sum(1).mean() / (2.0 * sigma * sigma)


def unwrap(module):
    """The plain module inside a DistributedDataParallel wrapper: Langevin runs on it, so no
    DDP hook fires inside MCMC; parameter updates go through the wrapper."""
    return getattr(module, "module", module)


def _amp(cfg, device):
    if cfg.amp == "bf16":
        return lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext


def _update_descriptor(des, opt, x_obs, x_syn, amp):
    """D2: one pass over the observed and synthesized examples together (independent rows)."""
    with amp():
        f = des(torch.cat([x_obs, x_syn]))
    f_obs, f_syn = f[: len(x_obs)], f[len(x_obs):]
    loss = descriptor_loss(f_obs, f_syn)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"des_loss": loss.item(), "f_gap": (f_obs.mean() - f_syn.mean()).item()}


def _infer_z(gen, x, z, cfg, amp, generator):
    """G1: l_G Langevin steps of z under the posterior p(z | x; α)."""
    return langevin(generator_log_posterior(unwrap(gen), x, cfg.gen_refsig, autocast=amp), z,
                    cfg.gen_steps, cfg.gen_step_size, cfg.gen_noise, generator)


def _update_generator(opt, target, g, sigma):
    """G2: α ← α − lr · ∂/∂α mean ||target − g(z)||² / (2σ²). Returns the loss."""
    loss = generator_loss(target, g, sigma)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def descriptor_chain_start(cfg, x_obs, chains, generator):
    """Initial states for Algorithm D: reference noise, the persistent chains, or the data."""
    m, shape = cfg.num_chains, x_obs.shape[1:]
    if cfg.des_init == "data":
        idx = torch.randint(len(x_obs), (m,), generator=generator, device=x_obs.device)
        return x_obs[idx]
    if cfg.des_init == "persistent" and chains is not None:
        return chains
    return cfg.des_refsig * randn((m, *shape), generator, x_obs.device)


def descriptor_step(des, opt_des, x_obs, x_init, cfg, generator=None):
    """Algorithm D. Returns (x̃, stats)."""
    amp = _amp(cfg, x_obs.device)
    # D1: l_D Langevin steps of the descriptor from x_init.
    x_syn = langevin(descriptor_log_prob(unwrap(des), cfg.des_refsig, amp), x_init, cfg.des_steps,
                     cfg.des_step_size, cfg.des_noise, generator)
    # D2: θ ← θ + lr · (mean ∂f(x_i)/∂θ − mean ∂f(x̃_j)/∂θ).
    stats = _update_descriptor(des, opt_des, x_obs, x_syn, amp)
    stats["langevin_move"] = (x_syn - x_init).flatten(1).pow(2).mean(1).sqrt().mean().item()
    return x_syn, stats


def abp_step(gen, opt_gen, x_obs, z, cfg, generator=None):
    """Algorithm G (alternating back-propagation). ``z`` holds each example's previous latent
    (warm start). Returns (z̃, stats)."""
    amp = _amp(cfg, x_obs.device)
    # G1: l_G Langevin steps of z under the posterior p(z | x; α), warm-started.
    z = _infer_z(gen, x_obs, z, cfg, amp, generator)
    # G2: α ← α − lr · ∂/∂α mean ||x_i − g(z_i)||² / (2σ²).
    with amp():
        g = gen(z)
    loss = _update_generator(opt_gen, x_obs, g, cfg.gen_refsig)
    return z, {"gen_loss": loss, "z_norm": z.flatten(1).norm(dim=1).mean().item()}


def coop_step(des, gen, opt_des, opt_gen, x_obs, cfg, latent_shape, generator=None):
    """CoopNets (MCMC teaching). Returns (stats, x̂ generated, x̃ revised)."""
    amp = _amp(cfg, x_obs.device)
    reuse = cfg.gen_steps == 0
    # G0: ẑ ~ N(0, I), x̂ = g(ẑ). With l_G = 0 the graph is kept so that G2 reuses it.
    z = randn((cfg.num_chains, *latent_shape), generator, x_obs.device)
    with amp(), torch.set_grad_enabled(reuse):
        x_gen = (gen if reuse else unwrap(gen))(z)
    # D1: l_D Langevin steps of the descriptor starting from x̂ -> revised x̃.
    x_rev = langevin(descriptor_log_prob(unwrap(des), cfg.des_refsig, amp), x_gen.float(),
                     cfg.des_steps, cfg.des_step_size, cfg.des_noise, generator)
    # G1 (optional): l_G Langevin steps of z towards x̃ -> z̃ (else z̃ = ẑ, known).
    if not reuse:
        z = _infer_z(gen, x_rev, z, cfg, amp, generator)
    # D2: update θ with observed {x_i} against revised {x̃_j}.
    stats = _update_descriptor(des, opt_des, x_obs, x_rev, amp)
    # G2: update α to reproduce x̃ from z̃ (reusing the G0 forward pass when z̃ = ẑ).
    if reuse:
        x_fit = x_gen
    else:
        with amp():
            x_fit = gen(z)
    stats["gen_loss"] = _update_generator(opt_gen, x_rev, x_fit, cfg.gen_refsig)
    stats["langevin_move"] = (x_rev - x_gen.detach().float()).flatten(1).pow(2).mean(1).sqrt().mean().item()
    return stats, x_gen.detach().float(), x_rev
