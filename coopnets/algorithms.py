"""The three learning algorithms as step functions of one shape.

    step(nets, batch, state, cfg, rng) -> StepResult(stats, state, samples)

descriptor_step  Algorithm D: Langevin from the chains (D1), then update θ (D2).
abp_step         Algorithm G: Langevin inference of each example's z (G1), then update α (G2).
coop_step        CoopNets: G0, D1, optional G1, D2, G2 (docs/coopnets.md, Section 3).

``stats`` holds 0-d tensors (no host synchronisation inside a step; read them with
``floats``), ``state`` is what the next step needs (Algorithm D's persistent chains,
Algorithm G's per-example latents), ``samples`` this step's synthesized tensors. ``STEPS``
picks the function for ``cfg.algorithm``. Losses are small named functions so that the update
each step makes is easy to read.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .config import GAP_SHAPES
from .distributed import mean_tensor
from .fast import run_amp
from .langevin import generator_log_posterior, langevin, revise
from .seeding import randn


@dataclass
class Nets:
    """What a step works on: the networks (DDP-wrapped or not), their optimisers, and the shape
    of one generator latent. An algorithm that does not use a network ignores it."""
    des: torch.nn.Module | None = None
    gen: torch.nn.Module | None = None
    opt_des: torch.optim.Optimizer | None = None
    opt_gen: torch.optim.Optimizer | None = None
    latent_shape: tuple = ()
    reviser: object = None  # optional (x, rng) -> revised x replacing the eager D1 loop


class Batch(NamedTuple):
    x: torch.Tensor  # (B, C, H, W) observed examples in [-1, 1]
    index: torch.Tensor | None = None  # their indices in the data set (Algorithm G's latents)


class StepResult(NamedTuple):
    stats: dict  # name -> 0-d tensor
    state: dict  # carried to the next step (and into checkpoints)
    samples: dict  # name -> this step's synthesized tensor (detached)


def floats(stats: dict) -> dict:
    """A step's stats as Python floats, with one host synchronisation for all of them."""
    if not stats:
        return {}
    values = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()).cpu()
                          for v in stats.values()]).tolist()
    return dict(zip(stats, values))


def descriptor_loss(f_obs: torch.Tensor, f_syn: torch.Tensor, gap_limit: float = 0.0,
                    shape: str = "quadratic") -> torch.Tensor:
    """mean_j f(x̃_j) − mean_i f(x_i): its gradient is minus the log-likelihood gradient.

    ``gap_limit`` G > 0 bounds the gap = mean f(x) − mean f(x̃), in one of two shapes:

    - ``quadratic`` (the default): the loss adds gap²/2G, so the gradient is (1 − gap/G) times
      the likelihood's, zero at G and reversed above it. The likelihood's fixed point has gap 0
      for a positively homogeneous f, so the fixed point does not move.
    - ``wall``: the likelihood gradient, unchanged while gap ≤ G; above G the loss adds
      (gap − G)²/2G, so the gradient is (1 − (gap − G)/G) times the likelihood's, zero at 2G.

    Both bound the runaway in which f separates data from samples faster than Langevin can
    follow. The quadratic brakes from gap 0 and brought texture-cpu back from a runaway that
    the wall holds at 2G; the wall does not slow a descriptor whose gap starts near G, which
    stalled some runs under the quadratic (docs/results.md "Stability").
    """
    gap = f_obs.mean() - f_syn.mean()
    if gap_limit <= 0:
        return -gap
    if shape not in GAP_SHAPES:
        raise ValueError(f"gap shape must be one of {GAP_SHAPES}, got {shape!r}")
    # The gradient is (−1 + w/G)∇gap with w = ḡ − G⁺ (wall) or ḡ (quadratic), ḡ the gap over
    # every process's examples (detached), so averaging the processes' gradients under DDP
    # gives one process's gradient on all of them; alone, ḡ = gap and the value returned is
    # exactly −gap + w²/2G.
    g_all = mean_tensor(gap.detach())
    w = (g_all - gap_limit).clamp(min=0) if shape == "wall" else g_all
    return -gap + w * (gap - g_all) / gap_limit + w * w / (2.0 * gap_limit)


def gap_limit(cfg, x: torch.Tensor) -> float:
    """G in f's units: ``cfg.des_gap_limit`` per pixel in units of 1/s² (0: off)."""
    return cfg.des_gap_limit * x[0].numel() / (cfg.ref_std * cfg.ref_std)


def generator_loss(target: torch.Tensor, g: torch.Tensor, residual_std: float) -> torch.Tensor:
    """mean_j ||target_j − g(z_j)||² / (2σ²)."""
    return (target - g.float()).flatten(1).pow(2).sum(1).mean() / (2.0 * residual_std ** 2)


def unwrap(module):
    """The plain module inside a DistributedDataParallel wrapper: Langevin runs on it, so no
    DDP hook fires inside MCMC; parameter updates go through the wrapper."""
    return getattr(module, "module", module)


def amp_context(cfg, device, part: str = "update"):
    """A factory of the autocast context ``cfg.amp`` asks for (bf16) or of a no-op one.
    ``part`` is "update" (the networks' passes that train the parameters) or "langevin" (the
    passes inside the chains): ``--amp bf16`` casts both, ``--amp bf16-langevin`` the chains only,
    ``--amp auto`` the chains only where the device has bf16 kernels (``fast.run_amp``)."""
    amp = run_amp(cfg, device)
    if amp == "bf16" or (amp == "bf16-langevin" and part == "langevin"):
        return lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext


def _rms_move(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Mean over examples of the RMS per-pixel change."""
    return (after - before).flatten(1).pow(2).mean(1).sqrt().mean()


def _revise(nets, x, cfg, amp, rng):
    """D1 with the run's settings (from a CUDA graph when the nets carry a reviser)."""
    if nets.reviser is not None:
        return nets.reviser(x, rng)
    des = nets.des
    return revise(unwrap(des), x, ref_std=cfg.ref_std, steps=cfg.des_steps,
                  step_size=cfg.des_step_size, noise=cfg.des_noise_level, rng=rng, autocast=amp)


def slope_penalty(f_syn: torch.Tensor, x_syn: torch.Tensor, weight: float, ref_std: float):
    """(penalty, u): ``weight`` · (P/s²) · mean_j (u_j − 1)⁺² and the slopes u_j = s² · RMS over
    the P pixels of ∂f(x̃_j)/∂x̃_j, the descriptor's slope at each revised sample in units of the
    reference's largest pull inside the image range (|x|/s² at |x| = 1). Differentiable in the
    descriptor's parameters (a second backward pass); ``x_syn`` must require grad."""
    (grad,) = torch.autograd.grad(f_syn.float().sum(), x_syn, create_graph=True)
    var = ref_std * ref_std
    # the clamp keeps the gradient finite where a sample's slope is exactly 0 (sqrt'(0) = inf)
    u = var * grad.flatten(1).pow(2).mean(1).clamp(min=1e-30).sqrt()
    return weight * grad[0].numel() / var * (u - 1).clamp(min=0).pow(2).mean(), u.detach()


def energy_penalty(f_obs: torch.Tensor, f_syn: torch.Tensor, weight: float, pixels: int,
                   ref_std: float) -> torch.Tensor:
    """``weight`` · (P/s²) · (mean_i f̂(x_i)² + mean_j f̂(x̃_j)²) with f̂ = f s²/P, the scores per
    pixel in units of 1/s². Its gradient in f is 2λ f̂_i / n at each of the n observed examples
    and 2λ f̂_j / m at each of the m samples (λ = ``weight``): added to the paper's loss
    (``descriptor_loss`` without a gap limit), the likelihood gradient at each example is
    scaled by (1 − 2λ f̂) at the data and (1 + 2λ f̂) at the samples."""
    unit = pixels / (ref_std * ref_std)
    return weight * unit * ((f_obs.float() / unit).pow(2).mean()
                            + (f_syn.float() / unit).pow(2).mean())


class GradClip:
    """``--des-grad-clip``: scales the descriptor's gradient down to ``multiple`` times the
    running average of its total norm before the optimiser's step. Adam divides by a root mean
    square that remembers a thousand steps, so a gradient ten times its recent size becomes a
    step about sixteen times the learning rate; clipped, a sudden pull still acts, spread over
    the steps the average takes to follow it.

    The average is exponential, ``decay`` per step, over the norms as clipped, and corrected for
    its start at 0 as Adam's moments are; for its first ``1 / (1 − decay)`` steps it only
    learns (no clipping), so a norm that grows as training starts is not held to its first
    values. ``state`` is the tensor (sum, steps) that travels with the run; no host
    synchronisation."""

    def __init__(self, multiple: float, state: torch.Tensor | None = None, decay: float = 0.98):
        self.multiple, self.decay = multiple, decay
        self.state = state  # (exponential sum of the clipped norms, steps seen); None at the start
        self.scale = None  # the factor the last call applied (1: not clipped)

    @property
    def warmup(self) -> int:
        return round(1 / (1 - self.decay))

    def average(self) -> torch.Tensor:
        """The bias-corrected running norm (0 before the first step has been seen)."""
        total, steps = self.state
        return total / (1 - self.decay ** steps).clamp(min=1e-12)

    def __call__(self, params) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads).detach().float()
        if self.state is None:
            self.state = torch.zeros(2, device=norm.device)
        total, steps = self.state
        limit = self.multiple * self.average()
        self.scale = torch.where(steps < self.warmup, torch.ones_like(norm),
                                 (limit / (norm + 1e-12)).clamp(max=1.0))
        for g in grads:
            g.mul_(self.scale.to(g.dtype))
        self.state = torch.stack([self.decay * total + (1 - self.decay) * norm * self.scale,
                                  steps + 1])


def update_descriptor(des, opt, x_obs, x_syn, amp, limit: float = 0.0, shape: str = "quadratic",
                      slope: float = 0.0, ref_std: float = 1.0, clip: GradClip | None = None,
                      energy: float = 0.0):
    """D2: one pass over the observed and synthesized examples together (independent rows),
    with ``slope`` > 0 the slope penalty at x̃ (``slope_penalty``), with ``energy`` > 0 the
    energy penalty (``energy_penalty``), and the gradient clipped by ``clip`` when given.
    Returns the loss (the likelihood's, with the gap limit), the scores f(x_i), f(x̃_j),
    detached, and the slopes u_j (None without the penalty)."""
    if slope > 0:
        x_syn = x_syn.detach().requires_grad_(True)
    with amp():
        f = des(torch.cat([x_obs, x_syn]))
    f_obs, f_syn = f[: len(x_obs)], f[len(x_obs):]
    loss = descriptor_loss(f_obs, f_syn, limit, shape)
    penalty, u = slope_penalty(f_syn, x_syn, slope, ref_std) if slope > 0 else (0.0, None)
    if energy > 0:
        penalty = penalty + energy_penalty(f_obs, f_syn, energy, x_obs[0].numel(), ref_std)
    opt.zero_grad(set_to_none=True)
    (loss + penalty).backward()
    if clip is not None:
        clip(des.parameters())
    opt.step()
    return loss.detach(), f_obs.detach(), f_syn.detach(), u


def _update_descriptor(des, opt, x_obs, x_syn, amp, cfg, state) -> tuple[dict, dict]:
    """D2 with the run's settings. Returns the stats and ``state`` with the clip's running
    average (``state["des_grad_norm"]``, --des-grad-clip) updated."""
    clip = GradClip(cfg.des_grad_clip, state.get("des_grad_norm")) if cfg.des_grad_clip else None
    loss, f_obs, f_syn, u = update_descriptor(des, opt, x_obs, x_syn, amp, gap_limit(cfg, x_obs),
                                              cfg.des_gap_shape, cfg.des_slope_penalty, cfg.ref_std,
                                              clip, cfg.des_energy_reg)
    stats = {"des_loss": loss, "f_gap": f_obs.mean() - f_syn.mean()}
    if u is not None:
        stats["des_slope"] = u.mean()
    if cfg.des_energy_reg:  # the scores' RMS over data and samples, in f_gap's units
        stats["des_energy"] = torch.cat([f_obs, f_syn]).float().pow(2).mean().sqrt()
    if clip is not None:
        stats["des_grad_scale"] = clip.scale
        state = {**state, "des_grad_norm": clip.state}
    return stats, state


def _infer_z(gen, x, z, cfg, amp, rng, steps=None, step_size=None):
    """G1: l_G Langevin steps of z under the posterior p(z | x; α)."""
    return langevin(generator_log_posterior(unwrap(gen), x, cfg.residual_std, autocast=amp), z,
                    cfg.gen_steps if steps is None else steps,
                    cfg.gen_step_size if step_size is None else step_size, cfg.gen_noise, rng)


def infer_warm(nets, batch, state, cfg, amp, rng, steps=None, step_size=None):
    """G1 warm-started: each observed example's latent in ``state["latents"]`` (one per
    training example) moved by l_G posterior Langevin steps, stored back, and returned."""
    latents = state["latents"]
    z = _infer_z(nets.gen, batch.x, latents[batch.index], cfg, amp, rng, steps, step_size)
    latents[batch.index] = z
    return z


def _update_generator(opt, target, g, residual_std) -> torch.Tensor:
    """G2: α ← α − lr · ∂/∂α mean ||target − g(z)||² / (2σ²). Returns the loss."""
    loss = generator_loss(target, g, residual_std)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def descriptor_chain_start(cfg, x_obs, chains, rng):
    """Initial states for Algorithm D: reference noise, the persistent chains, or the data."""
    m, shape = cfg.num_chains, x_obs.shape[1:]
    if cfg.des_init == "data":
        idx = torch.randint(len(x_obs), (m,), generator=rng, device=x_obs.device)
        return x_obs[idx]
    if cfg.des_init == "persistent" and chains is not None:
        return chains
    return cfg.ref_std * randn((m, *shape), rng, x_obs.device)


def descriptor_step(nets: Nets, batch: Batch, state: dict, cfg, rng=None) -> StepResult:
    """Algorithm D. ``state["chains"]``: the persistent chains (des_init persistent)."""
    amp, chain_amp = amp_context(cfg, batch.x.device), amp_context(cfg, batch.x.device, "langevin")
    x_init = descriptor_chain_start(cfg, batch.x, state.get("chains"), rng)
    # D1: l_D Langevin steps of the descriptor from x_init.
    x_syn = _revise(nets, x_init, cfg, chain_amp, rng)
    # D2: θ ← θ + lr · (mean ∂f(x_i)/∂θ − mean ∂f(x̃_j)/∂θ).
    stats, state = _update_descriptor(nets.des, nets.opt_des, batch.x, x_syn, amp, cfg, state)
    stats["langevin_move"] = _rms_move(x_syn, x_init)
    state = {**state, "chains": x_syn if cfg.des_init == "persistent" else None}
    return StepResult(stats, state, {"x_syn": x_syn})


def abp_step(nets: Nets, batch: Batch, state: dict, cfg, rng=None) -> StepResult:
    """Algorithm G (alternating back-propagation). ``state["latents"]`` holds one latent per
    training example (warm starts), updated in place at ``batch.index``."""
    amp = amp_context(cfg, batch.x.device)
    # G1: l_G Langevin steps of z under the posterior p(z | x; α), warm-started.
    z = infer_warm(nets, batch, state, cfg, amp_context(cfg, batch.x.device, "langevin"), rng)
    # G2: α ← α − lr · ∂/∂α mean ||x_i − g(z_i)||² / (2σ²).
    with amp():
        g = nets.gen(z)
    loss = _update_generator(nets.opt_gen, batch.x, g, cfg.residual_std)
    stats = {"gen_loss": loss, "z_norm": z.flatten(1).norm(dim=1).mean()}
    return StepResult(stats, state, {"z": z, "x_fit": g.detach().float()})


def continue_pool(nets, pool, x_rev, cfg, amp, rng):
    """``--coop-pool``: the pool's chains continued by l_D Langevin steps (the first step fills
    the pool from the step's revised samples ``x_rev`` instead)."""
    if pool is None:
        return x_rev[torch.arange(cfg.coop_pool, device=x_rev.device) % len(x_rev)].clone()
    return revise(unwrap(nets.des), pool, ref_std=cfg.ref_std, steps=cfg.des_steps,
                  step_size=cfg.des_step_size, noise=cfg.des_noise_level, rng=rng, autocast=amp)


def renew_pool(pool, x_rev, p: float, rng):
    """Each pool chain restarts, with probability ``p``, from one of the revised samples."""
    restart = torch.rand(len(pool), generator=rng, device=pool.device) < p
    pick = torch.randint(len(x_rev), (len(pool),), generator=rng, device=pool.device)
    return torch.where(restart.view(-1, *[1] * (pool.dim() - 1)), x_rev[pick], pool)


def coop_step(nets: Nets, batch: Batch, state: dict, cfg, rng=None) -> StepResult:
    """CoopNets (MCMC teaching). Carries no state between steps, except the pool of persistent
    chains of ``--coop-pool`` (``state["pool"]``) and the running gradient norm of
    ``--des-grad-clip`` (``state["des_grad_norm"]``)."""
    x_obs, amp, reuse = batch.x, amp_context(cfg, batch.x.device), cfg.gen_steps == 0
    chain_amp = amp_context(cfg, x_obs.device, "langevin")
    # G0: ẑ ~ N(0, I), x̂ = g(ẑ). With l_G = 0 the graph is kept so that G2 reuses it.
    z = randn((cfg.num_chains, *nets.latent_shape), rng, x_obs.device)
    with amp(), torch.set_grad_enabled(reuse):
        x_gen = (nets.gen if reuse else unwrap(nets.gen))(z)
    # D1: l_D Langevin steps of the descriptor starting from x̂ -> revised x̃.
    x_rev = _revise(nets, x_gen.float(), cfg, chain_amp, rng)
    # G1 (optional): l_G Langevin steps of z towards x̃ -> z̃ (else z̃ = ẑ, known).
    if not reuse:
        z = _infer_z(nets.gen, x_rev, z, cfg, chain_amp, rng)
    # The pool (--coop-pool): persistent chains, continued, learnt from beside x̃.
    pool = continue_pool(nets, state.get("pool"), x_rev, cfg, chain_amp, rng) if cfg.coop_pool else None
    # D2: update θ with observed {x_i} against revised {x̃_j} (and the pool's chains).
    stats, state = _update_descriptor(nets.des, nets.opt_des, x_obs,
                                      x_rev if pool is None else torch.cat([x_rev, pool]), amp, cfg,
                                      state)
    # G2: update α to reproduce x̃ from z̃ (reusing the G0 forward pass when z̃ = ẑ).
    if reuse:
        x_fit = x_gen
    else:
        with amp():
            x_fit = nets.gen(z)
    stats["gen_loss"] = _update_generator(nets.opt_gen, x_rev, x_fit, cfg.residual_std)
    x_gen = x_gen.detach().float()
    stats["langevin_move"] = _rms_move(x_rev, x_gen)
    if pool is not None:
        state = {**state, "pool": renew_pool(pool, x_rev, cfg.coop_pool_renew, rng)}
    return StepResult(stats, state, {"x_gen": x_gen, "x_rev": x_rev})


STEPS = {"coop": coop_step, "descriptor": descriptor_step, "abp": abp_step}

# Seed 004 (docs/ggcn.md): FRAME is Algorithm D with a frozen filter bank; wFRAME/wGCN and GGCN
# are in particle.py (which imports this module, hence the import here at the end).
from .particle import ggcn_step, wgcn_step  # noqa: E402

STEPS.update({"frame": descriptor_step, "wframe": wgcn_step, "wgcn": wgcn_step, "ggcn": ggcn_step})
