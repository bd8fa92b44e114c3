"""Spatial-temporal networks (Experiment 7, dynamic textures). Networks only compute.

descriptor(x) -> (B,) scores f(x; θ)            3-D ConvNet on (B, C, T, H, W), no BatchNorm
generator(z)  -> (B, C, T, H, W) in (-1, 1)     3-D transposed ConvNet from z (B, d, t, h, w)

"dyntex" nets are stationary in space and time: the descriptor's top layer is a 3-D
convolution whose responses are summed over all frames and positions, and the generator is
fully convolutional from a spatio-temporal latent, so a model trained on a short, small clip
synthesizes longer and larger videos (more latent cells). The released spatial-temporal
CoopNets code uses 3-D filters of 5x5x5 at stride 2 in the first descriptor layer and 3-D
transposed convolutions of stride 2 in space and time; its descriptor is only temporally
stationary (spatially fully connected). "dyntex" is stationary in space too, as the issue
asks, with LeakyReLU(0.2) as the image networks of this package.

"dyntex-fc<size>" nets are the released code's kind: stationary in time only. The same
descriptor body, then a top layer whose spatial kernel covers the whole body output (each
position has its own weights), summed over frames; the generator maps a latent with a time
axis and no spatial extent (B, d, t, 1, 1) by a first transposed convolution whose spatial
kernel is the first feature map's size, then the same stride-2 layers. Both take one frame
size only (the spec's ``size``) and any number of frames, so they can learn a clip's fixed
layout (a pot, a flag pole) and still synthesize longer videos.
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
    top_kernel: int = 3  # the top layer's kernel in time (and in space when stationary)
    # True: f sums the top responses over all frames and positions (any frame size). False:
    # the top layer is spatially fully connected (spatial kernel = the body's output size),
    # f sums over frames only, and the frames must be ``size`` x ``size``.
    stationary: bool = True
    size: int | None = None  # the frame size a non-stationary net requires (as DescriptorSpec)

    def body_size(self) -> int:
        """Height (= width) of the body's output for ``size`` x ``size`` frames."""
        size = self.size
        for _, _, s in self.convs:
            size = (size + _triple(s)[1] - 1) // _triple(s)[1]  # padding k // 2: ceil(size / s)
        return size

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
    # 0: stationary in space (a spatio-temporal latent, any frame size). > 0: the latent has
    # no spatial extent, (d, t, 1, 1), and the first layer's spatial kernel is ``start``, so it
    # makes a start x start map whose positions have their own weights (strides[0] must be 1 in
    # space); the frames then have one size, start times the later spatial strides.
    start: int = 0

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
        kt = spec.top_kernel
        if spec.stationary:
            self.top = nn.Conv3d(c, spec.top, kt, 1, kt // 2)
        else:  # spatially fully connected, a convolution in time: output (B, top, T', 1, 1)
            hw = spec.body_size()
            self.top = nn.Conv3d(c, spec.top, (kt, hw, hw), 1, (kt // 2, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B,)
        if x.dim() != 5:
            raise UserError(f"the video descriptor takes videos (B, C, T, H, W), got shape "
                            f"{tuple(x.shape)}; train video nets on video data (--data a.mp4)")
        n = self.spec.size
        if not self.spec.stationary and tuple(x.shape[-2:]) != (n, n):
            raise UserError(f"this video descriptor (spatially fully connected) takes {n}x{n} "
                            f"frames, got {x.shape[-2]}x{x.shape[-1]}; train on whole frames "
                            f"(--image-size {n} --crop-size 0) or choose --des-net dyntex")
        return self.top(self.body(x)).flatten(1).sum(1).float()


class VideoGenerator(nn.Module):
    """g(z; α): stride-s 3-D transposed convolutions from z (B, d, t, h, w) to (B, C, T, H, W)
    with T = t Π s_t, H = h Π s_h (Section 2 of docs/coopnets.md, in space-time)."""

    def __init__(self, spec: VideoGeneratorSpec, channels: int, width: int, z_dim: int, norm: str):
        super().__init__()
        if norm not in ("batch", "none"):
            raise UserError(f"--gen-norm must be batch or none, got {norm!r}")
        if len(spec.strides) != len(spec.widths) + 1:
            raise ValueError("a VideoGeneratorSpec needs one stride per layer")
        if spec.start and _triple(spec.strides[0])[1:] != (1, 1):
            raise ValueError("a VideoGeneratorSpec with start > 0 needs strides[0] = (t, 1, 1)")
        self.spec, self.z_dim = spec, z_dim

        def up(c_in, c_out, s, fixed=0):
            s = _triple(s)
            k = _triple(spec.kernel) if spec.kernel else tuple(3 if i == 1 else 2 * i for i in s)
            pad = tuple((ki - si + 1) // 2 for ki, si in zip(k, s))  # output = input * stride:
            extra = tuple(2 * p - (ki - si) for p, ki, si in zip(pad, k, s))  # k - s - 2p + op = 0
            if fixed:  # 1x1 -> fixed x fixed in space: a fully connected layer per time cell
                k, pad, extra = (k[0], fixed, fixed), (pad[0], 0, 0), (extra[0], 0, 0)
            return nn.ConvTranspose3d(c_in, c_out, k, s, pad, output_padding=extra)

        layers, c = [], z_dim
        for i, (mult, s) in enumerate(zip(spec.widths, spec.strides)):
            w = mult * width
            layers += [up(c, w, s, spec.start if i == 0 else 0),
                       nn.BatchNorm3d(w) if norm == "batch" else nn.Identity(), nn.LeakyReLU(0.2)]
            c = w
        layers += [up(c, channels, spec.strides[-1]), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    @property
    def stationary(self) -> bool:
        """Whether the generator is stationary in space and so makes any multiple of its size
        (every video generator is stationary in time: longer videos from more latent cells)."""
        return not self.spec.start

    def factors(self) -> tuple:
        """(temporal, spatial) upsampling factor from the latent to the video (spatial: the
        frame size itself for a fixed-layout generator, whose latent is 1x1 in space)."""
        s = [_triple(x) for x in self.spec.strides]
        return math.prod(x[0] for x in s), math.prod(x[1] for x in s) * (self.spec.start or 1)

    def latent_shape(self, image_size: int, frames: int = 0) -> tuple:
        """Shape of one latent for a video of ``frames`` frames of ``image_size`` squared."""
        ft, fs = self.factors()
        if self.spec.start and image_size != fs:
            raise UserError(f"this video generator has a fixed spatial layout and makes {fs}x{fs} "
                            f"frames only, got {image_size}x{image_size}; train on whole frames "
                            f"(--image-size {fs} --crop-size 0) or choose --gen-net dyntex")
        if not frames or frames % ft or image_size % fs:
            raise UserError(f"this video generator makes videos whose frame count is a multiple "
                            f"of {ft} and size a multiple of {fs}; got {frames} frames of "
                            f"{image_size}x{image_size}")
        return (self.z_dim, frames // ft, image_size // fs, image_size // fs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, d, t, h, w) -> (B, C, T, H, W)
        return self.net(z)
