"""Speed of one CoopNets step per preset: eager against the fast path, side by side.

For each preset (and, with --chains, each number of chains M) it prints: batch n, chains M,
Langevin steps l_D; seconds per `coop_step` for each mode (median over repeats after a warm-up;
CUDA timings synchronise); the speed-up of each mode over eager measured in the same run; the
FLOPs of a step (torch's FLOP formulas, forward and backward) and the achieved FLOP/s as a
fraction of the dense matrix-multiply peak measured in the same run on the same device (fp32 on
CPU; TF32 and bf16 on CUDA); and on CPU the same step done the way the public PyTorch port does
it ("port-style": Langevin by `.backward()` into the parameters, separate descriptor passes) with
our speed-up over it.

Modes: eager; compile (`torch.compile`, inductor, of both networks); graphs (the D1 Langevin
loop replayed from a CUDA graph, coopnets.fast.GraphedRevision; CUDA only); compile+graphs;
bf16 (eager under bf16 autocast, with the RMS difference of its revised samples from fp32's);
bf16-langevin (autocast inside the Langevin chains only, the parameter updates in fp32).

    python benchmarks/bench_step.py                                  # CPU: texture-cpu, mnist, cifar10, scene-64
    python benchmarks/bench_step.py --device cuda --chains 100 400 1600 --modes eager graphs compile+graphs bf16
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from coopnets import fast  # noqa: E402
from coopnets.algorithms import Batch, Nets, coop_step, descriptor_loss, generator_loss  # noqa: E402
from coopnets.config import resolve  # noqa: E402
from coopnets.errors import UserError  # noqa: E402
from coopnets.langevin import descriptor_log_prob, langevin  # noqa: E402
from coopnets.models import build_nets  # noqa: E402

SIZES = {"texture": 64, "mnist": 28, "img32": 32, "img64": 64, "img128": 128, "img256": 256}


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, dtype=torch.float32, tf32=False, seconds: float = 2.0, n: int = 2048) -> float:
    """Dense matrix-multiply FLOP/s on this device (best of repeated n x n products)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    sync(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t))
    torch.backends.cuda.matmul.allow_tf32 = old
    return best


def timed(fn, repeats: int, device) -> float:
    fn()  # warm-up (compilation, graph capture, cuDNN plans)
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class _CountFlops(TorchDispatchMode):
    """Sums torch's registered FLOP formulas (convolutions, matmuls, their backward) over the
    ops that run. torch's FlopCounterMode installs module hooks that autograd.grad(inputs=...)
    does not support, hence this plain dispatch mode."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops(fn) -> int:
    with _CountFlops() as counter:
        fn()
    return counter.total


def port_style_step(des, gen, opt_d, opt_g, x_obs, cfg, latent_shape):
    """One CoopNets iteration computed the way the public PyTorch port computes it."""
    z = torch.randn(cfg.num_chains, *latent_shape, device=x_obs.device)
    x_gen = gen(z)
    x = x_gen.detach()
    for _ in range(cfg.des_steps):  # Langevin with .backward(): parameter grads computed too
        x = x.detach().requires_grad_(True)
        des(x).backward(torch.ones(len(x), device=x.device))
        x = x - 0.5 * cfg.des_step_size ** 2 * (x / cfg.ref_std ** 2 - x.grad)
        x = x + cfg.des_step_size * torch.randn_like(x)
    x_rev = x.detach()
    loss_d = descriptor_loss(des(x_obs), des(x_rev))  # two separate passes
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = generator_loss(x_rev, x_gen, cfg.residual_std)
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def make_nets(cfg, channels, size, device, mode):
    """Seeded networks and Adam optimisers (fused on CUDA), arranged for ``mode``."""
    torch.manual_seed(0)
    des, gen = (m.to(device) for m in build_nets(cfg, channels))
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    des, gen = des.to(memory_format=fmt), gen.to(memory_format=fmt)
    fused = torch.device(device).type == "cuda"
    opt_d = torch.optim.Adam(des.parameters(), cfg.des_lr, betas=(cfg.des_beta1, 0.999), fused=fused)
    opt_g = torch.optim.Adam(gen.parameters(), cfg.gen_lr, betas=(cfg.gen_beta1, 0.999), fused=fused)
    plain = (des, gen)
    if "compile" in mode:
        des, gen = fast.compile_module(des, "inductor"), fast.compile_module(gen, "inductor")
    reviser = None
    if "graphs" in mode:
        amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if mode == "bf16" else None
        reviser = fast.GraphedRevision(des, ref_std=cfg.ref_std, steps=cfg.des_steps,
                                       step_size=cfg.des_step_size, autocast=amp)
    return Nets(des, gen, opt_d, opt_g, gen.latent_shape(size), reviser), plain


def bench(preset, chains, modes, repeats, device, peaks, port) -> list[dict]:
    base = resolve(preset, data="-", **({"num_chains": chains} if chains else {}))
    size = base.crop_size or base.image_size or SIZES[base.des_net]
    channels = 1 if base.des_net == "mnist" or preset.startswith("texture") else 3
    gen_x = torch.Generator().manual_seed(0)
    x_obs = (torch.rand(base.batch_size, channels, size, size, generator=gen_x) * 2 - 1).to(device)
    rows, t_eager, flop = [], None, None
    for mode in modes:
        if "graphs" in mode and torch.device(device).type != "cuda":
            continue
        if "compile" in mode:  # a preset that training refuses to compile is not timed so
            try:
                dataclasses.replace(base, compile="inductor").validate()
            except UserError as e:
                print(f"{preset}: {mode} skipped: {e}")
                continue
        # each mode's own precision (a preset's amp, e.g. mnist-table2-cpu's, is not the baseline)
        cfg = dataclasses.replace(base, amp=mode if mode.startswith("bf16") else "none")
        nets, plain = make_nets(cfg, channels, size, device, mode)
        rng = torch.Generator(device).manual_seed(1)
        step = lambda: coop_step(nets, Batch(x_obs), {}, cfg, rng)  # noqa: E731
        t = timed(step, repeats, device)
        if flop is None:
            flop = flops(step)
        t_eager = t if mode == "eager" else t_eager
        row = dict(preset=preset, mode=mode, n=cfg.batch_size, M=cfg.num_chains, l_D=cfg.des_steps,
                   s_step=t, gflop=flop / 1e9, speedup=(t_eager / t) if t_eager else None,
                   peak_frac={k: flop / t / v for k, v in peaks.items()})
        if mode.startswith("bf16"):  # soundness of bf16: revised samples against fp32's, same start
            des = plain[0]
            x0 = x_obs[: min(64, len(x_obs))]
            ctx = lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)  # noqa: E731
            g = lambda: torch.Generator(device).manual_seed(1)  # noqa: E731
            ref = langevin(descriptor_log_prob(des, cfg.ref_std), x0, cfg.des_steps, cfg.des_step_size, True, g())
            low = langevin(descriptor_log_prob(des, cfg.ref_std, ctx), x0, cfg.des_steps, cfg.des_step_size, True, g())
            row["bf16_err"] = ((low - ref).pow(2).mean().sqrt() / (ref - x0).pow(2).mean().sqrt()).item()
        rows.append(row)
    if port and torch.device(device).type == "cpu":
        nets, (des, gen) = make_nets(base, channels, size, device, "eager")
        t_port = timed(lambda: port_style_step(des, gen, nets.opt_des, nets.opt_gen, x_obs.contiguous(),
                                               base, nets.latent_shape), repeats, device)
        for r in rows:
            r["s_port"] = t_port
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["texture-cpu", "mnist", "cifar10", "scene-64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", nargs="+", default=None,
                   choices=["eager", "compile", "graphs", "compile+graphs", "bf16", "bf16-langevin"],
                   help="default: eager on CPU; eager graphs compile+graphs bf16 on CUDA")
    p.add_argument("--chains", nargs="+", type=int, default=[0],
                   help="numbers of chains M to time (0: the preset's)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-port", action="store_true", help="skip the port-style comparison")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--peak-seconds", type=float, default=2.0, help="time spent measuring the peak")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    modes = args.modes or (["eager", "graphs", "compile+graphs", "bf16"] if cuda else ["eager"])
    if "eager" not in modes:
        modes = ["eager", *modes]
    torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as a --tf32 run (the default)
        peaks = {"tf32": matmul_peak(device, tf32=True, seconds=args.peak_seconds),
                 "bf16": matmul_peak(device, torch.bfloat16, seconds=args.peak_seconds)}
        name = torch.cuda.get_device_name(device)
    else:
        peaks = {"fp32": matmul_peak(device, seconds=args.peak_seconds)}
        name = f"CPU, {args.threads} threads"
    print(f"torch {torch.__version__}, {name}; measured dense matmul peak: "
          + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in peaks.items()))
    head = (f"{'preset':12s} {'mode':15s} {'n':>4s} {'M':>5s} {'l_D':>4s} {'s/step':>9s} "
            f"{'vs eager':>8s} {'GFLOP':>7s} " + " ".join(f"{'%' + k:>6s}" for k in peaks)
            + f" {'port s':>8s} {'vs port':>7s} {'bf16 err':>8s}")
    print(head)
    print("-" * len(head))
    for preset in args.presets:
        for chains in args.chains:
            for r in bench(preset, chains, modes, args.repeats, device, peaks, not args.no_port):
                port = (f"{r['s_port']:8.3f} {r['s_port'] / r['s_step']:6.2f}x" if "s_port" in r
                        else " " * 15)
                err = f"{r['bf16_err']:8.3f}" if "bf16_err" in r else ""
                print(f"{r['preset']:12s} {r['mode']:15s} {r['n']:4d} {r['M']:5d} {r['l_D']:4d} "
                      f"{r['s_step']:9.4f} {r['speedup']:7.2f}x {r['gflop']:7.1f} "
                      + " ".join(f"{100 * v:5.1f}%" for v in r["peak_frac"].values())
                      + f" {port} {err}", flush=True)
    print("vs eager: eager s/step over this mode's, same run; %peak: achieved FLOP/s over the "
          "measured matmul peak; port s: the step as the public PyTorch port computes it; bf16 "
          "err: RMS difference of bf16 and fp32 revised samples over the RMS Langevin move.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
