"""Spatial-temporal networks (Experiment 7, dynamic textures). Networks only compute.

descriptor(x) -> (B,) scores f(x; θ)            3-D ConvNet on (B, C, T, H, W), no BatchNorm
generator(z)  -> (B, C, T, H, W) in (-1, 1)     3-D transposed ConvNet from z (B, d, t, h, w)

Both are stationary in space and time: the descriptor's top layer is a 3-D convolution whose
responses are summed over all frames and positions, and the generator is fully convolutional
from a spatio-temporal latent, so a model trained on a short, small clip synthesizes longer
and larger videos (more latent cells). The released spatial-temporal CoopNets code uses 3-D
filters of 5x5x5 at stride 2 in the first descriptor layer and 3-D transposed convolutions
of stride 2 in space and time; its descriptor is only temporally stationary (spatially fully
connected). Ours is stationary in space too, as the issue asks, with LeakyReLU(0.2) as the
image networks of this package.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError


def _triple(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


@dataclass(frozen=True)
class VideoDescriptorSpec:
    convs: tuple  # ((width multiple, kernel, stride), ...); kernel/stride an int or (t, h, w)
    top: int  # outputs of the top 3-D convolution, summed over channels, frames and positions
    top_kernel: int = 3
    stationary: bool = True  # always: f sums over all frames and positions
    size: int | None = None  # no required input size (as DescriptorSpec.size for stationary nets)

    def build(self, channels: int, width: int) -> "VideoDescriptor":
        return VideoDescriptor(self, channels, width)


@dataclass(frozen=True)
class VideoGeneratorSpec:
    widths: tuple  # width multiples of the hidden layers, coarse to fine
    strides: tuple  # one (t, h, w) stride per transposed convolution (len(widths) + 1 of them)
    # (t, h, w) kernel of every transposed convolution; None: 4 along a stride-2 axis and 3
    # along a stride-1 axis, so that every output voxel gets the same number of kernel taps
    # (no checkerboard from uneven overlap, as a 5-tap kernel at stride 2 gives)
    kernel: tuple | None = None

    def build(self, channels: int, width: int, z_dim: int, norm: str) -> "VideoGenerator":
        return VideoGenerator(self, channels, width, z_dim, norm)


class VideoDescriptor(nn.Module):
    """f(x; θ) = Σ_{channels, frames, positions} top(body(x)): p(x) ∝ exp(f(x)) N(x; 0, s²I)."""

    def __init__(self, spec: VideoDescriptorSpec, channels: int, width: int):
        super().__init__()
        self.spec, layers, c = spec, [], channels
        for mult, k, s in spec.convs:
            k, s = _triple(k), _triple(s)
            layers += [nn.Conv3d(c, mult * width, k, s, tuple(i // 2 for i in k)), nn.LeakyReLU(0.2)]
            c = mult * width
        self.body = nn.Sequential(*layers)
        self.top = nn.Conv3d(c, spec.top, spec.top_kernel, 1, spec.top_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B,)
        if x.dim() != 5:
            raise UserError(f"the video descriptor takes videos (B, C, T, H, W), got shape "
                            f"{tuple(x.shape)}; train video nets on video data (--data a.mp4)")
        return self.top(self.body(x)).flatten(1).sum(1).float()


class VideoGenerator(nn.Module):
    """g(z; α): stride-s 3-D transposed convolutions from z (B, d, t, h, w) to (B, C, T, H, W)
    with T = t Π s_t, H = h Π s_h (Section 2 of docs/coopnets.md, in space-time)."""

    stationary = True

    def __init__(self, spec: VideoGeneratorSpec, channels: int, width: int, z_dim: int, norm: str):
        super().__init__()
        if norm not in ("batch", "none"):
            raise UserError(f"--gen-norm must be batch or none, got {norm!r}")
        if len(spec.strides) != len(spec.widths) + 1:
            raise ValueError("a VideoGeneratorSpec needs one stride per layer")
        self.spec, self.z_dim = spec, z_dim

        def up(c_in, c_out, s):
            s = _triple(s)
            k = _triple(spec.kernel) if spec.kernel else tuple(3 if i == 1 else 2 * i for i in s)
            pad = tuple((ki - si + 1) // 2 for ki, si in zip(k, s))  # output = input * stride:
            extra = tuple(2 * p - (ki - si) for p, ki, si in zip(pad, k, s))  # k - s - 2p + op = 0
            return nn.ConvTranspose3d(c_in, c_out, k, s, pad, output_padding=extra)

        layers, c = [], z_dim
        for mult, s in zip(spec.widths, spec.strides):
            w = mult * width
            layers += [up(c, w, s), nn.BatchNorm3d(w) if norm == "batch" else nn.Identity(),
                       nn.LeakyReLU(0.2)]
            c = w
        layers += [up(c, channels, spec.strides[-1]), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def factors(self) -> tuple:
        """(temporal, spatial) upsampling factor from the latent to the video."""
        s = [_triple(x) for x in self.spec.strides]
        return math.prod(x[0] for x in s), math.prod(x[1] for x in s)

    def latent_shape(self, image_size: int, frames: int = 0) -> tuple:
        """Shape of one latent for a video of ``frames`` frames of ``image_size`` squared."""
        ft, fs = self.factors()
        if not frames or frames % ft or image_size % fs:
            raise UserError(f"this video generator makes videos whose frame count is a multiple "
                            f"of {ft} and size a multiple of {fs}; got {frames} frames of "
                            f"{image_size}x{image_size}")
        return (self.z_dim, frames // ft, image_size // fs, image_size // fs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, d, t, h, w) -> (B, C, T, H, W)
        return self.net(z)
