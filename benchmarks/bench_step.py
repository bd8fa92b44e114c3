"""Speed of one CoopNets step and of one descriptor Langevin step, per preset.

Prints, for each preset: batch n, chains M, Langevin steps l_D; seconds per `coop_step` and per
Langevin step (median over repeats after a warm-up); the FLOPs of each (counted by
torch's FLOP formulas, forward and backward); the achieved FLOP/s as a fraction of a dense
fp32 matrix-multiply peak measured in the same run; the same step done the way the public
PyTorch port does it ("port-style": Langevin by `.backward()` into the parameters, separate
descriptor passes for observed and synthesized images) and our speed-up over it; and, with
--amp, bf16 autocast timings with a soundness check of the revised samples.

    python benchmarks/bench_step.py                       # texture-cpu, mnist, cifar10, scene-64
    python benchmarks/bench_step.py --presets scene-64 --repeats 3 --amp
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from coopnets.algorithms import coop_step, descriptor_loss, generator_loss  # noqa: E402
from coopnets.models import build_nets  # noqa: E402
from coopnets.config import resolve  # noqa: E402
from coopnets.langevin import descriptor_log_prob, langevin  # noqa: E402

SIZES = {"texture": 64, "mnist": 28, "img32": 32, "img64": 64, "img128": 128, "img256": 256}


def matmul_peak(seconds: float = 2.0, n: int = 2048) -> float:
    """Dense fp32 matrix-multiply FLOP/s on this machine (best of repeated n x n products)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
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
    z = torch.randn(cfg.num_chains, *latent_shape)
    x_gen = gen(z)
    x = x_gen.detach()
    for _ in range(cfg.des_steps):  # Langevin with .backward(): parameter grads computed too
        x = x.detach().requires_grad_(True)
        des(x).backward(torch.ones(len(x)))
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


def bench(preset: str, repeats: int, amp: bool, peak: float, port: bool) -> list[dict]:
    cfg = resolve(preset, data="-")
    size = cfg.crop_size or cfg.image_size or SIZES[cfg.des_net]
    channels = 1 if cfg.des_net == "mnist" or preset.startswith("texture") else 3
    torch.manual_seed(0)
    des, gen = build_nets(cfg, channels)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    des, gen = des.to(memory_format=fmt), gen.to(memory_format=fmt)
    latent_shape = gen.latent_shape(size)
    x_obs = (torch.rand(cfg.batch_size, channels, size, size) * 2 - 1).to(memory_format=fmt)
    opt_d = torch.optim.Adam(des.parameters(), cfg.des_lr, betas=(cfg.des_beta1, 0.999))
    opt_g = torch.optim.Adam(gen.parameters(), cfg.gen_lr, betas=(cfg.gen_beta1, 0.999))
    x_start = (torch.rand(cfg.num_chains, channels, size, size) * 2 - 1).to(memory_format=fmt)
    rows = []
    for mode in (["fp32", "bf16"] if amp else ["fp32"]):
        c = resolve(preset, data="-", amp="bf16" if mode == "bf16" else "none")
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "bf16" else None
        lp = descriptor_log_prob(des, c.ref_std, ctx)
        step = lambda: coop_step(des, gen, opt_d, opt_g, x_obs, c, latent_shape)  # noqa: E731
        one_langevin = lambda: langevin(lp, x_start, 1, c.des_step_size)  # noqa: E731
        t_step, t_lang = timed(step, repeats), timed(one_langevin, max(3, repeats))
        f_step, f_lang = flops(step), flops(one_langevin)
        row = dict(preset=preset, mode=mode, n=c.batch_size, M=c.num_chains, l_D=c.des_steps,
                   s_step=t_step, s_lang=t_lang, gflop_step=f_step / 1e9, gflop_lang=f_lang / 1e9,
                   peak_frac=f_step / t_step / peak)
        if mode == "bf16":  # soundness: bf16 revision vs fp32 revision from the same start
            g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
            ref = langevin(descriptor_log_prob(des, c.ref_std), x_start, c.des_steps,
                           c.des_step_size, True, g())
            low = langevin(lp, x_start, c.des_steps, c.des_step_size, True, g())
            moved = (ref - x_start).pow(2).mean().sqrt()
            row["bf16_err"] = ((low - ref).pow(2).mean().sqrt() / moved).item()
        rows.append(row)
    if port:  # the port's layout too: NCHW tensors
        import copy
        pd, pg = (copy.deepcopy(m).to(memory_format=torch.contiguous_format) for m in (des, gen))
        po_d = torch.optim.Adam(pd.parameters(), cfg.des_lr, betas=(cfg.des_beta1, 0.999))
        po_g = torch.optim.Adam(pg.parameters(), cfg.gen_lr, betas=(cfg.gen_beta1, 0.999))
        x_nchw = x_obs.contiguous()
        t_port = timed(lambda: port_style_step(pd, pg, po_d, po_g, x_nchw, cfg, latent_shape),
                       repeats)
        for r in rows:
            r["s_port"] = t_port
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["texture-cpu", "mnist", "cifar10", "scene-64"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--amp", action="store_true", help="also time bf16 autocast")
    p.add_argument("--no-port", action="store_true", help="skip the port-style comparison")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = matmul_peak()
    print(f"torch {torch.__version__}, {args.threads} threads, fp32 matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s")
    head = (f"{'preset':12s} {'mode':5s} {'n':>4s} {'M':>4s} {'l_D':>4s} {'s/step':>8s} "
            f"{'GFLOP':>8s} {'%peak':>6s} {'s/langevin':>10s} {'GFLOP':>7s} {'port s':>8s} "
            f"{'speed-up':>8s} {'bf16 err':>8s}")
    print(head)
    print("-" * len(head))
    for preset in args.presets:
        for r in bench(preset, args.repeats, args.amp, peak, not args.no_port):
            port = f"{r['s_port']:8.3f} {r['s_port'] / r['s_step']:7.2f}x" if "s_port" in r else " " * 17
            err = f"{r['bf16_err']:8.3f}" if "bf16_err" in r else ""
            print(f"{r['preset']:12s} {r['mode']:5s} {r['n']:4d} {r['M']:4d} {r['l_D']:4d} "
                  f"{r['s_step']:8.3f} {r['gflop_step']:8.1f} {100 * r['peak_frac']:5.1f}% "
                  f"{r['s_lang']:10.4f} {r['gflop_lang']:7.2f} {port} {err}", flush=True)
    print("port s: the same step computed as the public PyTorch port does (Langevin by "
          ".backward() into parameter grads, separate descriptor passes); bf16 err: RMS "
          "difference of bf16 and fp32 revised samples over the RMS Langevin move.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
