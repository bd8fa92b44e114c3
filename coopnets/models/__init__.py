"""Model families and their registries (literal dicts: name -> architecture spec).

Each family lives in its own module and its specs know how to build their network:

    image.py   2-D descriptor and generator (textures, MNIST, CIFAR-10, faces, scenes, LSUN)
    video.py   3-D (spatial-temporal) descriptor and generator (dynamic textures, Exp 7)

A new family (video, GGCN's hidden-space networks) adds a module with its own spec classes and
its entries below; ``build_descriptor``/``build_generator`` call ``spec.build(...)``, so the
training loop, checkpoints and sampling need no change.
"""
from __future__ import annotations

from ..errors import UserError
from .image import Descriptor, DescriptorSpec, Generator, GeneratorSpec, recalibrate_batchnorm
from .video import VideoDescriptorSpec, VideoGeneratorSpec

# Bumped whenever a registry architecture changes, so that an old checkpoint is refused with a
# clear message instead of loading silently into a different network (2: LeakyReLU generator).
ARCH_VERSION = 2

DESCRIPTORS = {
    # Exp 1 textures: stationary; f sums the top responses over positions, any input size.
    "texture": DescriptorSpec(convs=((1, 5, 2), (2, 3, 2)), top=100, stationary=True),
    # Its receptive field is 17 pixels, under one brick (25 pixels long at 128x128); two more
    # stride-2 layers see 65 pixels, so f can count the joints of a course (texture-cpu).
    "texture-deep": DescriptorSpec(convs=((1, 5, 2), (2, 3, 2), (4, 3, 2), (4, 3, 2)), top=100,
                                   stationary=True),
    # texture-deep with a fifth stride-2 layer: 129 pixels, for textures at 224x224 where a
    # brick is 45 pixels long (texture-deep's 65 see 1.4 of them; at 128x128 they saw 2.5).
    "texture-deep5": DescriptorSpec(convs=((1, 5, 2), (2, 3, 2), (4, 3, 2), (4, 3, 2), (4, 3, 2)),
                                    top=100, stationary=True),
    # Exp 4 MNIST 28x28: 28 -> 14 -> 7 -> 7, fc 100.
    "mnist": DescriptorSpec(convs=((1, 5, 2), (2, 3, 2), (4, 3, 1)), top=100, size=28),
    # Exp 5 CIFAR-10 32x32: 32 -> 16 -> 8 -> 4 -> 2, fc 100.
    "img32": DescriptorSpec(convs=((1, 5, 2), (2, 5, 2), (4, 5, 2), (8, 5, 2)), top=100, size=32),
    # Exp 2/3 objects and scenes 64x64: 64 -> 32 -> 16 -> 16, fc 100.
    "img64": DescriptorSpec(convs=((1, 5, 2), (2, 3, 2), (4, 3, 1)), top=100, size=64),
    # Exp 5 CelebA 128x128: 128 -> 64 -> ... -> 4, fc 100.
    "img128": DescriptorSpec(convs=((1, 5, 2), (2, 5, 2), (4, 5, 2), (8, 5, 2), (8, 3, 2)),
                             top=100, size=128),
    # Exp 5 LSUN bedrooms 256x256: 256 -> 128 -> ... -> 4, fc 100.
    "img256": DescriptorSpec(convs=((1, 5, 2), (2, 5, 2), (4, 5, 2), (8, 5, 2), (8, 5, 2),
                                    (8, 3, 2)), top=100, size=256),
    # Exp 7 dynamic textures: 3-D convs (t, h, w) 5x5x5 / 2, 3x3x3 / 2, top 3x3x3 summed over
    # all frames and positions (stationary in space and time; any length and size).
    "dyntex": VideoDescriptorSpec(convs=((1, 5, 2), (2, 3, 2)), top=50),
    # Exp 7, the released code's kind: the same body, then a top layer 3 frames long and
    # spatially fully connected (kernel 3 x H/4 x W/4), summed over frames only: stationary in
    # time, one frame size (the layout of a clip is learnt); any number of frames.
    "dyntex-fc64": VideoDescriptorSpec(convs=((1, 5, 2), (2, 3, 2)), top=50, stationary=False,
                                       size=64),
    "dyntex-fc128": VideoDescriptorSpec(convs=((1, 5, 2), (2, 3, 2)), top=50, stationary=False,
                                        size=128),
}

GENERATORS = {
    # latent (d, h, w) -> (C, 16h, 16w): synthesizes any size, e.g. twice the training image.
    "texture": GeneratorSpec(widths=(4, 2, 1)),
    # Kernel 4 at stride 2 gives every output pixel the same number of taps; kernel 5 gives
    # alternate pixels 3 and 2, a checkerboard that a stationary latent repeats as a cell.
    "texture-k4": GeneratorSpec(widths=(4, 2, 1), kernel=4),
    # texture-k4 with a latent at 1/32: 32-pixel cells at 224x224 hold 2.5 brick widths, as
    # texture-k4's 16-pixel cells did at 128x128 (16-pixel cells at 224 locked the columns to them)
    "texture-k4-32": GeneratorSpec(widths=(4, 4, 2, 1), kernel=4),
    "mnist": GeneratorSpec(widths=(4, 2), start=7),  # 7 -> 14 -> 28
    "img32": GeneratorSpec(widths=(8, 4, 2, 1), start=2),  # 2 -> 4 -> 8 -> 16 -> 32
    "img64": GeneratorSpec(widths=(8, 4, 2, 1), start=4),  # 4 -> 8 -> 16 -> 32 -> 64
    "img128": GeneratorSpec(widths=(8, 8, 4, 2, 1), start=4),  # 4 -> ... -> 128
    "img256": GeneratorSpec(widths=(8, 8, 8, 4, 2, 1), start=4),  # 4 -> ... -> 256
    # Exp 7: z (d, T/4, H/16, W/16) -> (C, T, H, W); stride 2 in time twice, in space 4 times.
    "dyntex": VideoGeneratorSpec(widths=(4, 2, 1), strides=((1, 2, 2), (2, 2, 2), (2, 2, 2),
                                                            (1, 2, 2))),
    # Exp 7, fixed layout: z (d, T/4, 1, 1) -> (w0, T/4, s, s) by a transposed conv of spatial
    # kernel s (each position its own weights), then the stride-2 layers: s = 8 -> 64, 16 -> 128.
    "dyntex-fc64": VideoGeneratorSpec(widths=(4, 2, 1), start=8,
                                      strides=((1, 1, 1), (2, 2, 2), (2, 2, 2), (1, 2, 2))),
    "dyntex-fc128": VideoGeneratorSpec(widths=(4, 2, 1), start=16,
                                       strides=((1, 1, 1), (2, 2, 2), (2, 2, 2), (1, 2, 2))),
}


def build_descriptor(name: str, channels: int, width: int):
    if name not in DESCRIPTORS:
        raise UserError(f"unknown descriptor {name!r}; choose one of {', '.join(DESCRIPTORS)}")
    return DESCRIPTORS[name].build(channels, width)


def build_generator(name: str, channels: int, width: int, z_dim: int, norm: str):
    if name not in GENERATORS:
        raise UserError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    return GENERATORS[name].build(channels, width, z_dim, norm)


def build_nets(cfg, channels: int):
    """The descriptor and generator that a Config describes, freshly initialised."""
    return (build_descriptor(cfg.des_net, channels, cfg.des_width),
            build_generator(cfg.gen_net, channels, cfg.gen_width, cfg.z_dim, cfg.gen_norm))


__all__ = ["ARCH_VERSION", "DESCRIPTORS", "GENERATORS", "Descriptor", "DescriptorSpec", "Generator",
           "GeneratorSpec", "VideoDescriptorSpec", "VideoGeneratorSpec", "build_descriptor", "build_generator", "build_nets",
           "recalibrate_batchnorm"]
