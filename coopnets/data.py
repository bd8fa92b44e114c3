"""Training data: every source becomes one uint8 tensor (N, C, H, W).

Sources (``kind="auto"`` picks by the path):
  folder   a directory searched recursively for .png/.jpg/.jpeg/.bmp/.webp
  zip      a .zip archive of such images
  mnist    an MNIST ``.npz`` (x_train/x_test) or IDX file (``*-idx3-ubyte[.gz]``)
  array    a ``.npy``/``.npz`` array (N,H,W), (N,H,W,C) or (N,C,H,W), uint8 or float in [0, 1]
  texture  a single image file (one training image; random crops are taken at batch time)

Batches are a pure function of (seed, step): resuming needs nothing but the step, and
each rank of a distributed run takes its own slice of the same global batch.
"""
from __future__ import annotations

import gzip
import io
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .images import read_image, resize, to_float
from .seeding import CROP, generator, sub_seed

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _from_files(items, image_size, center_crop, channels):
    """items: list of (name, opener) -> uint8 (N, H, W, C) array."""
    arrays, first = [], None
    for name, opener in items:
        arr = read_image(opener(), name, channels)
        channels = arr.shape[-1]  # the first image fixes the channel count
        if image_size:
            arr = resize(arr, image_size, center_crop)
        elif first is None:
            first = (name, arr.shape)
        elif arr.shape != first[1]:
            raise UserError(
                f"images have different sizes ({first[0]} is {first[1][1]}x{first[1][0]}, "
                f"{name} is {arr.shape[1]}x{arr.shape[0]}); pass --image-size N "
                "(and --center-crop true) to resize them all")
        arrays.append(arr)
    return np.stack(arrays)


def _folder(path: Path, image_size, center_crop, channels):
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise UserError(f"no images (.png/.jpg/.jpeg/.bmp/.webp) found under {path}")
    return _from_files([(str(p), lambda p=p: p) for p in files], image_size, center_crop, channels)


def _zip(path: Path, image_size, center_crop, channels):
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UserError(f"{path} is not a readable zip archive") from None
    with zf:
        names = sorted(n for n in zf.namelist()
                       if Path(n).suffix.lower() in IMAGE_EXTS and not n.endswith("/"))
        if not names:
            raise UserError(f"no images (.png/.jpg/.jpeg/.bmp/.webp) found in {path}")
        def member(n):
            try:
                return io.BytesIO(zf.read(n))
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError,
                    NotImplementedError, RuntimeError) as e:  # bad CRC, truncated, encrypted
                raise UserError(f"cannot read {n} in {path}: {e}; the archive is damaged") from None
        items = [(f"{path}:{n}", lambda n=n: member(n)) for n in names]
        return _from_files(items, image_size, center_crop, channels)


def _read_idx(path: Path) -> np.ndarray:
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: header says {dims}, found {data.size} bytes")
    return data.reshape(dims)


def _npz_array(path: Path, key: str | None) -> np.ndarray:
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # EOFError: a 0-byte file
        raise UserError(f"cannot read {path}: {str(e) or type(e).__name__}") from None
    if isinstance(f, np.ndarray):
        return f
    with f:
        keys = list(f.keys())
        if key is None:
            key = "x_train" if "x_train" in keys else keys[0] if len(keys) == 1 else None
        if key is None or key not in keys:
            raise UserError(f"{path} holds arrays {keys}; choose one with --data-key NAME")
        try:
            return f[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a damaged member
            raise UserError(f"cannot read array {key} of {path}: {str(e) or type(e).__name__}") from None


def _to_nhwc(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
            raise UserError(f"{name}: expected uint8 pixels or floats in [0, 1], got {arr.dtype}")
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise UserError(f"{name}: float pixels must be finite and in [0, 1]")
        arr = np.round(arr * 255).astype(np.uint8)
    if arr.ndim == 3:
        return arr[..., None]
    if arr.ndim == 4 and arr.shape[-1] in (1, 3):
        return arr
    if arr.ndim == 4 and arr.shape[1] in (1, 3):
        return arr.transpose(0, 2, 3, 1)
    raise UserError(f"{name}: expected an array (N,H,W), (N,H,W,C) or (N,C,H,W) with C in "
                    f"{{1,3}}, got shape {arr.shape}")


def detect_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "folder"
    if name.endswith(".zip"):
        return "zip"
    if "idx3-ubyte" in name or ("mnist" in name and name.endswith(".npz")):
        return "mnist"
    if name.endswith((".npy", ".npz")):
        return "array"
    if path.suffix.lower() in IMAGE_EXTS:
        return "texture"
    raise UserError(f"cannot tell what kind of data {path} is; pass --data-kind "
                    "folder|zip|mnist|array|texture")


def load_images(path, kind: str = "auto", image_size: int = 0, center_crop: bool = False,
                channels: int = 0, subset: str = "", key: str = "") -> torch.Tensor:
    """Load a data set as a uint8 tensor (N, C, H, W).

    ``image_size`` > 0 resizes every image to a square of that size (after an optional
    centre crop); ``channels`` 1 or 3 converts, 0 keeps what the data has; ``subset``
    "START:STOP" keeps those examples (e.g. "0:50000" for MNIST's training part).
    """
    if not path:
        raise UserError("no data given; pass --data PATH")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"data path {path} does not exist; check --data")
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"data file {path} is empty (0 bytes)")
    kind = detect_kind(path) if kind == "auto" else kind
    ch = channels or None
    if kind == "folder":
        arr = _folder(path, image_size, center_crop, ch)
    elif kind == "zip":
        arr = _zip(path, image_size, center_crop, ch)
    elif kind == "texture":
        arr = read_image(path, str(path), ch)[None]
        if image_size:
            arr = resize(arr[0], image_size, center_crop)[None]
    elif kind in ("mnist", "array"):
        if "idx3-ubyte" in path.name:
            arr = _read_idx(path)
        else:
            arr = _npz_array(path, key or None)
        if arr.ndim == 0 or len(arr) == 0:
            raise UserError(f"{path} holds no examples (array of shape {arr.shape})")
        arr = _to_nhwc(arr, str(path))
        if image_size:
            arr = np.stack([resize(a, image_size, center_crop) for a in arr])
    else:
        raise UserError(f"unknown data kind {kind!r}; use auto|folder|zip|mnist|array|texture")
    if subset:
        try:
            start, stop = (int(s) if s else None for s in subset.split(":"))
        except ValueError:
            raise UserError(f"--subset must look like START:STOP, got {subset!r}") from None
        arr = arr[start:stop]
        if len(arr) == 0:
            raise UserError(f"--subset {subset} selects no examples from {path}")
    if len(arr) == 0:
        raise UserError(f"{path} holds no examples")
    if channels and arr.shape[-1] != channels:
        arr = np.repeat(arr, 3, -1) if channels == 3 else arr.mean(-1, keepdims=True).round().astype(np.uint8)
    return torch.from_numpy(np.array(arr.transpose(0, 3, 1, 2), order="C"))  # owned, writable


def asset(name: str) -> str:
    """Path of a file bundled with coopnets (see coopnets/assets/LICENSE.md)."""
    return str(resources.files("coopnets") / "assets" / name)


@dataclass
class Batches:
    """Deterministic batches of a uint8 data set: ``batch(step)`` is a pure function.

    Each epoch is a permutation drawn from (seed, epoch); the last incomplete batch of an
    epoch is dropped. With ``crop`` > 0 every example is a random crop of that size (the
    texture setting), drawn from (seed, step).
    """
    images: torch.Tensor  # (N, C, H, W) uint8
    batch_size: int
    seed: int = 0
    crop: int = 0

    def __post_init__(self):
        n, _, h, w = self.images.shape
        if self.crop and (self.crop > h or self.crop > w):
            raise UserError(f"--crop-size {self.crop} is larger than the images ({h}x{w})")

    def indices(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Example indices of this step's batch (this rank's share of the global batch)."""
        n, b = len(self.images), self.batch_size
        if n >= b * world:  # epochs of n // (b * world) global batches, no repeats within one
            epoch, k = divmod(step, n // (b * world))
            perm = torch.randperm(n, generator=generator(sub_seed(self.seed, epoch)))
            start = (k * world + rank) * b
            return perm[start:start + b]
        # fewer examples than a global batch (e.g. one texture image): draw with replacement
        g = generator(sub_seed(self.seed, step))
        return torch.randint(n, (b * world,), generator=g)[rank * b:(rank + 1) * b]

    def batch(self, step: int, rank: int = 0, world: int = 1, indices=None) -> torch.Tensor:
        """Float batch in [-1, 1] for this step (and this rank's share of it); ``indices``:
        this step's ``indices(step, rank, world)`` when the caller already has them."""
        x = self.images[self.indices(step, rank, world) if indices is None else indices]
        if self.crop:
            gc = generator(sub_seed(self.seed, step * world + rank, CROP))
            h, w = x.shape[-2:]
            tops = torch.randint(h - self.crop + 1, (len(x),), generator=gc).tolist()
            lefts = torch.randint(w - self.crop + 1, (len(x),), generator=gc).tolist()
            x = torch.stack([im[:, t:t + self.crop, l:l + self.crop]
                             for im, t, l in zip(x, tops, lefts)])
        return to_float(x)
