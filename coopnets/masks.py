"""Occlusion masks for pattern completion (Exp 6, Table 4): 1 = visible pixel, 0 = occluded.

    block(size, fraction, rng)   a square block of that fraction of the image area at a random
                                 place: the paper's M30 / M40 / M50 masks (0.3 / 0.4 / 0.5)
    center(size, fraction)       a centred square block
    pixels(size, fraction, rng)  salt and pepper: each pixel occluded with that probability
    from_image(path, size)       a user's mask picture: white (>= 0.5) visible, black occluded
    missing_frames(frames, spec, rng)  video frames fully occluded: "0.25" (a random 25% of
                                 the frames) or "8-15" (frames 8 to 15, counted from 0)
    parse_mask(spec, size, n, seed, frames=0)  the command-line form, (n, 1, H, W), or for
                                 videos of ``frames`` frames (n, 1, T, H, W), seeded per example

Single masks are float tensors (H, W). ``parse_mask`` draws mask i from its own generator
seeded by (seed, i), so mask i does not depend on how many masks are drawn. For videos an
image mask occludes the same pixels in every frame (a fixed occluder), except ``pixels:F``,
which draws every frame afresh.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .images import read_image
from .seeding import generator, sub_seed

NAMED_BLOCKS = {"m30": 0.3, "m40": 0.4, "m50": 0.5}
MASK_HELP = ("m30 | m40 | m50 | center | pixels:FRACTION | PATH to a mask image (white = visible)"
             " | videos also: frames:FRACTION or frames:FIRST-LAST (missing frames)")


def _hw(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0:
        raise UserError(f"mask size must be positive, got {h}x{w}")
    return int(h), int(w)


def _check_fraction(fraction: float, what: str) -> float:
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"{what}: the occluded fraction must be in [0, 1), got {fraction}; "
                        "a mask that hides every pixel leaves nothing to complete from")
    return float(fraction)


def _as_generator(rng) -> torch.Generator:
    if isinstance(rng, torch.Generator):
        return rng
    return torch.Generator().manual_seed(int(rng or 0))


def block_side(size, fraction: float) -> int:
    """Side of the square block that covers ``fraction`` of an H x W image (rounded)."""
    h, w = _hw(size)
    return min(h, w, round(math.sqrt(fraction * h * w)))


def block(size, fraction: float, rng: torch.Generator | int | None = None) -> torch.Tensor:
    """A square block covering ``fraction`` of the area (to the rounding of its side), placed
    uniformly at random inside the image: M30/M40/M50 of Table 4. Returns (H, W)."""
    h, w = _hw(size)
    side = block_side((h, w), _check_fraction(fraction, "block mask"))
    g = _as_generator(rng)
    top = int(torch.randint(h - side + 1, (1,), generator=g))
    left = int(torch.randint(w - side + 1, (1,), generator=g))
    mask = torch.ones(h, w)
    mask[top:top + side, left:left + side] = 0.0
    return mask


def center(size, fraction: float = 0.25) -> torch.Tensor:
    """A centred square block covering ``fraction`` of the area. Returns (H, W)."""
    h, w = _hw(size)
    side = block_side((h, w), _check_fraction(fraction, "center mask"))
    top, left = (h - side) // 2, (w - side) // 2
    mask = torch.ones(h, w)
    mask[top:top + side, left:left + side] = 0.0
    return mask


def pixels(size, fraction: float, rng: torch.Generator | int | None = None) -> torch.Tensor:
    """Salt-and-pepper occlusion: each pixel is occluded independently with probability
    ``fraction`` (so the occluded count is Binomial(H W, fraction)). Returns (H, W)."""
    h, w = _hw(size)
    fraction = _check_fraction(fraction, "pixels mask")
    occluded = torch.rand(h, w, generator=_as_generator(rng)) < fraction
    mask = (~occluded).float()
    if mask.sum() == 0:  # possible only for tiny images with a fraction close to 1
        raise UserError(f"the pixels:{fraction} mask hid all {h * w} pixels; lower the fraction")
    return mask


def from_image(path, size) -> torch.Tensor:
    """A mask picture (any format PIL reads), greyscale, white = visible: pixels >= 0.5 are
    visible. It must have the images' size exactly. Returns (H, W)."""
    h, w = _hw(size)
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"mask {path} is neither a mask name ({MASK_HELP}) nor an image file")
    arr = read_image(p, str(p), channels=1)[..., 0]  # (H, W) uint8
    if arr.shape != (h, w):
        raise UserError(f"mask image {p} is {arr.shape[1]}x{arr.shape[0]} but the images are "
                        f"{w}x{h}; make a mask of the same size")
    mask = torch.from_numpy((arr.astype(np.float32) / 255.0 >= 0.5).astype(np.float32))
    check_mask(mask, str(p))
    return mask


def missing_frames(frames: int, spec: str, rng: torch.Generator | int | None = None) -> torch.Tensor:
    """Which of ``frames`` frames are missing, (T,) float, 1 = present: ``spec`` "F" hides
    round(F T) frames drawn at random (at least one frame stays), "A-B" hides frames A..B
    (inclusive, from 0)."""
    keep = torch.ones(frames)
    if "-" in spec:
        try:
            first, last = (int(v) for v in spec.split("-"))
        except ValueError:
            raise UserError(f"--mask frames:FIRST-LAST takes two frame numbers, got frames:{spec}") from None
        if not 0 <= first <= last < frames or (first, last) == (0, frames - 1):
            raise UserError(f"--mask frames:{spec}: need 0 <= FIRST <= LAST < {frames} (the video "
                            f"has {frames} frames) and at least one frame left visible")
        keep[first:last + 1] = 0.0
        return keep
    try:
        fraction = float(spec)
    except ValueError:
        raise UserError(f"--mask frames: takes a fraction (frames:0.25) or a range (frames:8-15), "
                        f"got frames:{spec}") from None
    n_missing = round(_check_fraction(fraction, "frames mask") * frames)
    if n_missing >= frames:  # a fraction just under 1 of a short video
        raise UserError(f"--mask frames:{spec} hides all {frames} frames; lower the fraction")
    keep[torch.randperm(frames, generator=_as_generator(rng))[:n_missing]] = 0.0
    return keep


def check_mask(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Raise a UserError if any mask in ``mask`` hides every pixel (nothing to infer z from).
    A mask with no occlusion is allowed (completion then returns the input unchanged).
    ``mask``: one (H, W) or a batch (n, ...) checked per example (images or videos)."""
    flat = mask.reshape(1, -1) if mask.dim() == 2 else mask.flatten(1)
    if (flat.sum(1) == 0).any():
        raise UserError(f"{name} occludes every pixel; completion needs some visible pixels "
                        "(1 or white = visible, 0 or black = occluded)")
    return mask


def parse_mask(spec: str, size, n: int, seed: int = 0, frames: int = 0) -> torch.Tensor:
    """Masks for ``n`` images from a command-line spec (see MASK_HELP): (n, 1, H, W) float;
    with ``frames`` > 0, for videos: (n, 1, T, H, W).

    Random masks are seeded per example: mask i comes from a generator seeded by (seed, i).
    """
    h, w = _hw(size)
    key = spec.strip().lower()
    t = max(int(frames), 1)

    def per_example(make):
        gens = (generator(sub_seed(seed, i)) for i in range(n))
        return torch.stack([make(g) for g in gens])[:, None]

    def same(m):  # one (H, W) or (T, H, W) mask for every example
        return m.expand(n, 1, *m.shape).clone()

    if key in NAMED_BLOCKS:
        masks = per_example(lambda g: block((h, w), NAMED_BLOCKS[key], g))
    elif key == "center":
        masks = same(center((h, w)))
    elif key.startswith("pixels:"):
        try:
            fraction = float(key.split(":", 1)[1])
        except ValueError:
            raise UserError(f"--mask pixels:FRACTION takes a number, got {spec!r}") from None
        masks = per_example(lambda g: torch.stack([pixels((h, w), fraction, g) for _ in range(t)]))
        masks = masks if frames else masks[:, :, 0]
    elif key.startswith("frames:"):
        if not frames:
            raise UserError(f"--mask {spec}: missing frames are for video runs; for images use "
                            "m30 | m40 | m50 | center | pixels:F | a mask image")
        masks = per_example(lambda g: missing_frames(frames, key.split(":", 1)[1], g))
        return check_mask(masks[..., None, None].expand(n, 1, frames, h, w).clone(), f"mask {spec!r}")
    else:
        masks = same(from_image(spec, (h, w)))
    if frames and masks.dim() == 4:  # an image mask: the same pixels in every frame
        masks = masks[:, :, None].expand(n, 1, frames, h, w).clone()
    return check_mask(masks, f"mask {spec!r}")
