"""The fast path of a training step: compiled networks and a CUDA-graphed descriptor revision.

A CoopNets step on a GPU is launch-bound: ten Langevin steps of a small ConvNet are hundreds of
tiny kernels, and the GPU waits for the Python that launches them. Two remedies, each behind a
config field so that the eager path stays one flag away:

``compile``      ``torch.compile`` the descriptor and the generator (``--compile inductor``;
                 ``aot_eager`` checks the wiring without code generation). Langevin's
                 ``autograd.grad`` runs through the compiled forward and its compiled backward.
``cuda_graphs``  capture the whole D1 loop (``des_steps`` Langevin steps of the descriptor) in a
                 CUDA graph per chain shape and replay it each step (CUDA only; elsewhere the
                 eager loop runs and ``describe`` says so).

Both compute the same algorithm: the graph's noise is drawn outside it, step by step, from the
run's generator, exactly as the eager loop draws it, and the update is the same function
(``langevin.langevin_update``), so a graphed revision equals the eager one to float tolerance.
The parameters are read by address, and the optimisers update them in place, so a graph
captured once stays valid for the rest of the run.
"""
from __future__ import annotations

import functools

import torch

from .langevin import descriptor_log_prob, langevin_update, revise
from .seeding import randn

COMPILE_BACKENDS = ("none", "inductor", "aot_eager")


def compile_module(module: torch.nn.Module, backend: str) -> torch.nn.Module:
    """``module`` compiled with ``backend`` (static shapes: batch, chains and steps are fixed in
    a run), or ``module`` itself for ``"none"``. The compiled module shares the parameters."""
    if backend == "none" or module is None:
        return module
    return torch.compile(module, backend=backend, dynamic=False)


def revision_body(descriptor, x: torch.Tensor, noise: torch.Tensor, *, ref_std: float,
                  step_size: float, autocast=None, noise_scale: float = 1.0) -> torch.Tensor:
    """``len(noise)`` Langevin steps of x under p(x; θ) with the noise given (one slice of the
    shape of x per step). This is the function a CUDA graph captures; on any device it equals
    ``revise`` when ``noise`` holds the draws ``revise`` would make."""
    log_prob = descriptor_log_prob(descriptor, ref_std, autocast)
    half_sq = 0.5 * step_size * step_size
    x = x.detach().clone()  # the caller's tensor (a graph's static input) is left as it is
    for t in range(len(noise)):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_prob(x).sum(), x)
        x = langevin_update(x.detach(), grad, half_sq, noise[t], step_size * noise_scale)
    return x.detach()


def draw_noise(steps: int, shape, rng, device) -> torch.Tensor:
    """The Langevin noise of ``steps`` steps, drawn one step at a time from ``rng`` as the eager
    loop draws it (so both paths consume the generator identically)."""
    return torch.stack([randn(shape, rng, device) for _ in range(steps)])


class GraphedRevision:
    """Descriptor revision (step D1) replayed from a CUDA graph; eager off CUDA.

    Call it like ``revise``'s core: ``graphed(x, rng) -> x_revised``. The first call for a chain
    shape warms up on a side stream and captures the loop; later calls copy x and this step's
    noise into the graph's static inputs and replay. With ``des_noise`` off, noise is zero.
    """

    def __init__(self, descriptor, *, ref_std: float, steps: int, step_size: float,
                 noise: bool | float = True, autocast=None):
        self.des, self.ref_std, self.steps = descriptor, ref_std, steps
        self.step_size, self.noise, self.autocast = step_size, noise, autocast
        self.graphs: dict = {}

    def eager(self, x: torch.Tensor, rng) -> torch.Tensor:
        return revise(self.des, x, ref_std=self.ref_std, steps=self.steps,
                      step_size=self.step_size, noise=self.noise, rng=rng,
                      autocast=self.autocast)

    def _body(self, x, noise):
        return revision_body(self.des, x, noise, ref_std=self.ref_std, step_size=self.step_size,
                             autocast=self.autocast, noise_scale=float(self.noise))

    def _capture(self, x: torch.Tensor, noise: torch.Tensor):
        static_x, static_noise = x.clone(), noise.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuDNN plans, autograd's lazy state
            for _ in range(3):
                self._body(static_x, static_noise)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._body(static_x, static_noise)
        return graph, static_x, static_noise, static_out

    def __call__(self, x: torch.Tensor, rng) -> torch.Tensor:
        if x.device.type != "cuda" or self.steps == 0:
            return self.eager(x, rng)
        x = x.detach().float()
        if self.noise:
            noise = draw_noise(self.steps, x.shape, rng, x.device)
        else:
            noise = torch.zeros((self.steps, *x.shape), device=x.device)
        key = (tuple(x.shape), x.stride())
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, noise)
        graph, static_x, static_noise, static_out = self.graphs[key]
        static_x.copy_(x)
        static_noise.copy_(noise)
        graph.replay()
        return static_out.clone()


def configure_device(cfg, device: torch.device) -> None:
    """Process-wide numerics for a CUDA run: TF32 matrix multiplies and convolutions when
    ``cfg.tf32``, float32 for both when not (convolutions are most of this model's work, and
    PyTorch leaves them in TF32 unless told)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(cfg.tf32)
        torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)


def bf16_is_native(device) -> bool:
    """Whether ``device`` has bfloat16 kernels for the networks: a CUDA GPU of compute
    capability 8 or more (Ampere on), or a CPU that oneDNN runs bf16 on (AVX-512 or AMX). On an
    AVX2-only CPU PyTorch emulates bf16: `mnist-table2-cpu`'s step took 9x as long as in float32
    there (docs/results.md), where a CPU with the kernels had run it 1.27x faster."""
    return _bf16_is_native(str(torch.device(device)))


@functools.lru_cache(maxsize=None)
def _bf16_is_native(device: str) -> bool:
    d = torch.device(device)
    if d.type == "cuda":  # (is_bf16_supported() counts GPUs that emulate it, and asks GPU 0)
        if not torch.cuda.is_available():
            return False
        if torch.version.hip:
            return torch.cuda.is_bf16_supported()
        return torch.cuda.get_device_capability(d)[0] >= 8
    try:
        return d.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the probe: no kernels known
        return False


def run_amp(cfg, device) -> str:
    """The precision a run's steps use: ``cfg.amp``, with "auto" made "bf16-langevin" where the
    device has bf16 kernels and "none" where it would emulate them. "auto" is decided on the
    machine that runs, so a run moved between such machines changes precision (its log says)."""
    if cfg.amp != "auto":
        return cfg.amp
    return "bf16-langevin" if bf16_is_native(device) else "none"


def describe_amp(cfg, device) -> str:
    """What the run log says of its precision: nothing for float32 asked for, the mode "auto"
    chose, and a warning where bf16 was asked for on a device that emulates it."""
    mode, kind = run_amp(cfg, device), torch.device(device).type
    if cfg.amp == "auto":
        why = "has" if mode != "none" else "has no"
        return (f"--amp auto: {'bf16 Langevin chains' if mode != 'none' else 'float32'} "
                f"(this {kind} {why} bf16 kernels)")
    if mode != "none" and not bf16_is_native(device):
        return (f"warning: --amp {mode} on a {kind} without bf16 kernels is emulated, "
                f"several times slower than --amp none (or --amp auto, which chooses)")
    return ""


def describe(cfg, device: torch.device) -> str:
    """One line for the run log saying which fast path is on (or why it is not)."""
    parts = []
    if cfg.compile != "none":
        parts.append(f"networks compiled ({cfg.compile})")
    if cfg.cuda_graphs:
        parts.append("descriptor revision replayed from a CUDA graph" if device.type == "cuda"
                     else f"--cuda-graphs needs a CUDA device; this {device.type} run revises eagerly")
    if device.type == "cuda":
        parts.append("fused Adam, " + ("TF32 matmuls and convolutions" if cfg.tf32 else "no TF32"))
    return "; ".join(parts)
