"""Every random stream of coopnets, derived in one place from the user's seed.

Two rules, so that streams never overlap by accident and a reader sees them all here:

* ``sub_seed(seed, i, stride)`` = seed · stride + i: the i-th member of a family of streams
  (example i, step i, epoch i, restart i). Each family has its own prime stride.
* ``stream_seed(seed, name)`` = seed + STREAMS[name]: the one stream of a named purpose.

``ExampleRNG`` gives every example its own generator (sample i draws the same numbers whatever
batch it sits in), which is what makes sampling, completion and DDP batch-independent.
"""
from __future__ import annotations

import torch

EXAMPLE = 1_000_003  # example i of a seed (sampling, masks), or step/epoch i of the data order
CROP = 7_919  # the random crops of one step on one rank
RESTART = 10_007  # restart r of completion's latent inference
REFINEMENT = 5_003  # the member of the RESTART family that completion's refinement uses

STREAMS = {
    "weights": 0,  # initial network weights
    "fixed_latents": 0,  # the latent batch of the progress grids
    "abp_latents": 0,  # Algorithm G's initial per-example latents
    "grid_revision": 1,  # Langevin noise of the revised progress grids
    "interpolation_revision": 1,  # Langevin noise of `coopnets interpolate --revise`
    "bn_calibration": 2,  # the latents that set the generator's BatchNorm statistics
}


def sub_seed(seed: int, index: int, stride: int = EXAMPLE) -> int:
    """The seed of member ``index`` of a family of streams under ``seed``."""
    return int(seed) * stride + int(index)


def stream_seed(seed: int, name: str) -> int:
    """The seed of the named stream (see ``STREAMS``) under the user's ``seed``."""
    return int(seed) + STREAMS[name]


def generator(seed: int, device="cpu") -> torch.Generator:
    """A torch.Generator seeded with ``seed`` on ``device``."""
    return torch.Generator(device).manual_seed(int(seed))


class ExampleRNG:
    """One torch.Generator per example, so example i draws the same numbers whatever batch it
    sits in (per-example seeded sampling). Example i's seed is ``sub_seed(seed, i)``."""

    def __init__(self, seed: int, indices, device="cpu"):
        self.device = torch.device(device)
        self.gens = [generator(sub_seed(seed, i)) for i in indices]

    def randn(self, shape) -> torch.Tensor:
        """(len(indices), *shape[1:]) standard normals, row i from example i's generator."""
        rows = [torch.randn(tuple(shape[1:]), generator=g) for g in self.gens]
        return torch.stack(rows).to(self.device)


def randn(shape, rng=None, device="cpu") -> torch.Tensor:
    """Standard normals from a torch.Generator, an ExampleRNG, or the global RNG."""
    if isinstance(rng, ExampleRNG):
        return rng.randn(shape)
    return torch.randn(shape, generator=rng, device=device)
