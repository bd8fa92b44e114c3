"""Image networks: the bottom-up descriptor and the top-down generator. Networks only compute.

descriptor(x) -> (B,) scores f(x; θ)       bottom-up ConvNet, no BatchNorm (examples independent)
generator(z)  -> (B, C, H, W) in (-1, 1)   top-down ConvNet, tanh output

Widths are multiples of a base width ``w`` (``--des-width``, ``--gen-width``); the registry
entries in ``coopnets.models`` are the architectures of the paper's released code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError


@dataclass(frozen=True)
class DescriptorSpec:
    convs: tuple  # ((width multiple, kernel, stride), ...), each followed by LeakyReLU(0.2)
    top: int  # outputs of the top layer, summed into f
    stationary: bool = False  # top is a 3x3 conv summed over all positions (textures)
    size: int | None = None  # the input size a non-stationary net requires

    def build(self, channels: int, width: int) -> "Descriptor":
        return Descriptor(self, channels, width)


@dataclass(frozen=True)
class GeneratorSpec:
    widths: tuple  # width multiples of the hidden layers, coarse to fine
    start: int = 0  # spatial size of the first feature map (0: spatial latent, textures)
    kernel: int = 5  # transposed convolutions, stride 2, each doubling the size

    def build(self, channels: int, width: int, z_dim: int, norm: str) -> "Generator":
        return Generator(self, channels, width, z_dim, norm)

    @property
    def cell(self) -> int:
        """Output pixels per latent cell of a stationary generator: each layer doubles the size."""
        return 2 ** (len(self.widths) + 1)


class Descriptor(nn.Module):
    """f(x; θ): bottom-up ConvNet; the top layer's outputs are summed (over positions too when
    stationary). Section 1 of docs: p(x; θ) ∝ exp(f(x; θ)) N(x; 0, s²I)."""

    def __init__(self, spec: DescriptorSpec, channels: int, width: int):
        super().__init__()
        self.spec, layers, c = spec, [], channels
        for mult, k, s in spec.convs:
            layers += [nn.Conv2d(c, mult * width, k, s, k // 2), nn.LeakyReLU(0.2)]
            c = mult * width
        self.body = nn.Sequential(*layers)
        if spec.stationary:
            self.top = nn.Conv2d(c, spec.top, 3, 1, 1)
        else:
            size = spec.size
            for _, _, s in spec.convs:
                size = (size + s - 1) // s
            self.top = nn.Linear(c * size * size, spec.top)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B,)
        if not self.spec.stationary and x.shape[-1] != self.spec.size:
            raise UserError(f"this descriptor takes {self.spec.size}x{self.spec.size} images, "
                            f"got {x.shape[-2]}x{x.shape[-1]}; pass --image-size {self.spec.size}"
                            " or choose another --des-net")
        h = self.body(x)
        h = h if self.spec.stationary else h.flatten(1)
        return self.top(h).flatten(1).sum(1).float()


class Generator(nn.Module):
    """g(z; α): top-down ConvNet with transposed convolutions and tanh output (Section 2).

    Non-stationary: z (B, d) -> (B, w0, start, start) by a transposed conv (a fully connected
    layer), then stride-2 layers. Stationary (start = 0): z (B, d, h, w) -> (B, C, 2^L h, 2^L w).
    """

    def __init__(self, spec: GeneratorSpec, channels: int, width: int, z_dim: int, norm: str):
        super().__init__()
        if norm not in ("batch", "none"):
            raise UserError(f"--gen-norm must be batch or none, got {norm!r}")
        self.spec, self.z_dim = spec, z_dim

        def block(conv, c_out):
            return [conv, nn.BatchNorm2d(c_out) if norm == "batch" else nn.Identity(),
                    nn.LeakyReLU(0.2)]

        def up(c_in, c_out):
            k = spec.kernel  # padding so that the output is exactly twice the input
            pad = (k - 1) // 2
            return nn.ConvTranspose2d(c_in, c_out, k, 2, pad, output_padding=2 - k + 2 * pad)

        widths = [m * width for m in spec.widths]
        if spec.start:
            layers, c = block(nn.ConvTranspose2d(z_dim, widths[0], spec.start), widths[0]), widths[0]
            widths = widths[1:]
        else:
            layers, c = [], z_dim
        for w in widths:
            layers += block(up(c, w), w)
            c = w
        layers += [up(c, channels), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    @property
    def stationary(self) -> bool:
        """Whether the generator takes a spatial latent and so makes any multiple of its size."""
        return not self.spec.start

    def latent_shape(self, image_size: int) -> tuple:
        """Shape of one latent vector for an output of this size (spatial for textures)."""
        if self.spec.start:
            return (self.z_dim,)
        factor = self.spec.cell
        if image_size % factor:
            raise UserError(f"the texture generator makes sizes that are multiples of {factor}, "
                            f"got {image_size}")
        return (self.z_dim, image_size // factor, image_size // factor)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, d) or (B, d, h, w) -> (B, C, H, W)
        return self.net(z[:, :, None, None] if z.dim() == 2 else z)


@torch.no_grad()
def recalibrate_batchnorm(gen: nn.Module, latents: torch.Tensor, batch_size: int) -> None:
    """Set the generator's BatchNorm running statistics to the exact batch statistics over
    ``latents`` ("precise BN"). Training uses batch statistics (as the paper's code does); sampling
    uses these, so that a sample does not depend on the other examples of its batch."""
    bns = [m for m in gen.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was = gen.training
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    gen.train()
    for lo in range(0, len(latents), batch_size):
        gen(latents[lo:lo + batch_size])
    for bn, m in zip(bns, saved):
        bn.momentum = m
    gen.train(was)
