"""Videos: every source becomes one uint8 tensor (N, C, T, H, W); animations out.

Sources (by the path):
  .avi .mp4 .mov .mkv .webm .gif   one video file, decoded with imageio (imageio-ffmpeg ships
                                   its own ffmpeg binary, so no system ffmpeg is needed)
  folder                           a folder of frames (.png/.jpg/...), sorted by name: one video
  .npy / .npz                      uint8 (T, H, W, C) / (T, H, W) (one video) or (N, T, H, W, C)

``frames``/``frame_start``/``frame_stride`` pick frames ``start, start+stride, ...`` (at most
``frames``); ``image_size`` resizes each frame to a square (after an optional centre crop).
``VideoBatches`` draws random spatio-temporal crops for training, a pure function of
(seed, step) like ``data.Batches``. ``save_gif``/``save_mp4``/``save_strip`` write
animations and PNG frame strips of float videos in [-1, 1].
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import IMAGE_EXTS, Batches, _npz_array
from .errors import UserError
from .images import read_image, resize, save_array_png, to_float, to_uint8
from .seeding import CROP, generator, sub_seed

VIDEO_EXTS = {".avi", ".mp4", ".mov", ".mkv", ".webm", ".gif"}


def is_video_path(path) -> bool:
    """Whether ``path`` names a video file (by its extension)."""
    return Path(path).suffix.lower() in VIDEO_EXTS


def _decode(path: Path, start: int, stride: int, frames: int) -> list[np.ndarray]:
    """The selected frames of a video file as (H, W, 3) uint8 arrays; one-line errors."""
    try:
        import imageio.v3 as iio
    except ImportError:  # pragma: no cover - a dependency of coopnets
        raise UserError("reading videos needs imageio and imageio-ffmpeg: "
                        "pip install imageio imageio-ffmpeg") from None
    plugin = "pillow" if path.suffix.lower() == ".gif" else "FFMPEG"
    out = []
    try:
        for i, frame in enumerate(iio.imiter(path, plugin=plugin)):
            if i >= start and (i - start) % stride == 0:
                out.append(np.asarray(frame))
                if frames and len(out) == frames:
                    break
    except Exception as e:  # ffmpeg and pillow raise many kinds; all mean "unreadable"
        text = str(e).strip().splitlines()
        raise UserError(f"cannot read video {path}: {text[0] if text else type(e).__name__}"
                        "; check the file or convert it to .mp4") from None
    if not out:
        raise UserError(f"video {path} has no frames from frame {start} on")
    return out


def _frames_rgb(frames: list[np.ndarray], name: str) -> np.ndarray:
    """A list of frames -> (T, H, W, C) uint8 with C = 1 or 3."""
    fixed = []
    for f in frames:
        f = f[..., None] if f.ndim == 2 else f
        if f.shape[-1] == 4:  # RGBA (GIF, PNG): drop alpha
            f = f[..., :3]
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] not in (1, 3):
            raise UserError(f"{name}: frames must be uint8 greyscale or RGB, got {f.dtype} {f.shape}")
        fixed.append(f)
    if any(f.shape != fixed[0].shape for f in fixed):
        raise UserError(f"{name}: frames have different sizes")
    return np.stack(fixed)


def _array_videos(path: Path, key: str) -> np.ndarray:
    """(N, T, H, W, C) uint8 from a .npy/.npz array (T,H,W), (T,H,W,C) or (N,T,H,W,C)."""
    arr = _npz_array(path, key or None)
    if arr.dtype != np.uint8:
        raise UserError(f"{path}: video arrays must be uint8, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5 or arr.shape[-1] not in (1, 3) or 0 in arr.shape:
        raise UserError(f"{path}: expected a video array (T,H,W), (T,H,W,C) or (N,T,H,W,C) "
                        f"with C in {{1,3}}, got shape {arr.shape}")
    return arr


def load_videos(path, frames: int = 0, frame_start: int = 0, frame_stride: int = 1,
                image_size: int = 0, center_crop: bool = False, channels: int = 0,
                key: str = "") -> torch.Tensor:
    """Load videos as a uint8 tensor (N, C, T, H, W) (see the module docstring)."""
    if not path:
        raise UserError("no data given; pass --data PATH")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"data path {path} does not exist; check --data")
    if frames < 0 or frame_start < 0 or frame_stride < 1:
        raise UserError("--frames and --frame-start must be >= 0 and --frame-stride >= 1")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        files = files[frame_start::frame_stride][: frames or None]
        if not files:
            raise UserError(f"no frames (.png/.jpg/.jpeg/.bmp/.webp) found in {path}")
        vids = _frames_rgb([read_image(p, str(p), None) for p in files], str(path))[None]
    elif path.suffix.lower() in (".npy", ".npz"):
        vids = _array_videos(path, key)[:, frame_start::frame_stride][:, : frames or None]
        if vids.shape[1] == 0:
            raise UserError(f"{path} has no frames from frame {frame_start} on")
    elif is_video_path(path):
        vids = _frames_rgb(_decode(path, frame_start, frame_stride, frames), str(path))[None]
    else:
        raise UserError(f"{path} is not a video (.avi/.mp4/.mov/.mkv/.webm/.gif, a folder of "
                        "frames, or a .npy/.npz array)")
    if frames and vids.shape[1] < frames:
        raise UserError(f"{path} has only {vids.shape[1]} frames from frame {frame_start} with "
                        f"stride {frame_stride}; --frames {frames} asks for more")
    if image_size:
        vids = np.stack([np.stack([resize(f, image_size, center_crop) for f in v]) for v in vids])
    if channels and vids.shape[-1] != channels:
        vids = (np.repeat(vids, 3, -1) if channels == 3
                else vids.mean(-1, keepdims=True).round().astype(np.uint8))
    return torch.from_numpy(np.ascontiguousarray(vids.transpose(0, 4, 1, 2, 3)))


@dataclass
class VideoBatches(Batches):
    """Deterministic batches of videos (N, C, T, H, W) uint8: ``crop`` x ``crop`` pixels and
    ``crop_frames`` frames at random places (0: the whole extent), drawn from (seed, step)."""
    crop_frames: int = 0

    def __post_init__(self):
        if self.images.dim() != 5:
            raise UserError(f"videos must be (N, C, T, H, W), got shape {tuple(self.images.shape)}")
        t, h, w = self.images.shape[2:]
        if self.crop and (self.crop > h or self.crop > w):
            raise UserError(f"--crop-size {self.crop} is larger than the frames ({h}x{w})")
        if self.crop_frames > t:
            raise UserError(f"--crop-frames {self.crop_frames} is more than the {t} frames loaded")

    def batch(self, step: int, rank: int = 0, world: int = 1, indices=None) -> torch.Tensor:
        x = self.images[self.indices(step, rank, world) if indices is None else indices]
        t, h, w = x.shape[2:]
        ct, cs = self.crop_frames or t, self.crop or min(h, w)
        if (ct, cs, cs) != (t, h, w):
            gc = generator(sub_seed(self.seed, step * world + rank, CROP))
            starts = [torch.randint(n - c + 1, (len(x),), generator=gc).tolist()
                      for n, c in ((t, ct), (h, cs), (w, cs))]
            x = torch.stack([v[:, a:a + ct, b:b + cs, c:c + cs] for v, a, b, c in zip(x, *starts)])
        return to_float(x)


# ---- writing animations -------------------------------------------------------------------------
def _frames_uint8(videos: torch.Tensor, pad: int = 2) -> np.ndarray:
    """Videos (N, C, T, H, W) in [-1, 1] -> (T, H, N*(W+pad)-pad, 3) uint8, side by side."""
    if videos.dim() == 4:
        videos = videos[None]
    v = to_uint8(videos).permute(0, 2, 3, 4, 1).numpy()  # (N, T, H, W, C)
    if v.shape[-1] == 1:
        v = np.repeat(v, 3, -1)
    n, t, h, w, _ = v.shape
    out = np.full((t, h, n * (w + pad) - pad, 3), 255, np.uint8)
    for i in range(n):
        out[:, :, i * (w + pad): i * (w + pad) + w] = v[i]
    return out


def _atomic(path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
    return path


def save_gif(videos: torch.Tensor, path, fps: float = 12.0) -> Path:
    """An animated GIF (looping) of videos (N, C, T, H, W) in [-1, 1], side by side."""
    from PIL import Image
    frames = [Image.fromarray(f) for f in _frames_uint8(videos)]
    return _atomic(path, lambda p: frames[0].save(p, format="GIF", save_all=True,
                                                   append_images=frames[1:], loop=0,
                                                   duration=round(1000 / fps)))


def save_mp4(videos: torch.Tensor, path, fps: float = 12.0) -> Path:
    """An H.264 MP4 of videos (N, C, T, H, W) in [-1, 1], side by side (sizes padded to even)."""
    import imageio.v3 as iio
    f = _frames_uint8(videos)
    f = np.pad(f, ((0, 0), (0, f.shape[1] % 2), (0, f.shape[2] % 2), (0, 0)), mode="edge")
    return _atomic(path, lambda p: iio.imwrite(p, f, plugin="FFMPEG", fps=fps, codec="libx264",
                                               macro_block_size=1))


def save_strip(videos: torch.Tensor, path, n_frames: int = 8, pad: int = 2) -> Path:
    """A PNG with one row per video and ``n_frames`` evenly spaced frames across."""
    if videos.dim() == 4:
        videos = videos[None]
    t = videos.shape[2]
    idx = np.linspace(0, t - 1, min(n_frames, t)).round().astype(int)
    rows = [_frames_uint8(v[:, idx].transpose(0, 1)[:, :, None], pad)[0]  # frames side by side
            for v in videos]
    h, w = rows[0].shape[:2]
    grid = np.full((len(rows) * (h + pad) - pad, w, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        grid[i * (h + pad): i * (h + pad) + h] = r
    save_array_png(grid, path)
    return Path(path)


def save_video_samples(videos: torch.Tensor, path_stem, fps: float = 12.0) -> None:
    """Progress samples of a video run: ``<stem>.gif`` (animation) and ``<stem>.png`` (strip)."""
    save_gif(videos, f"{path_stem}.gif", fps)
    save_strip(videos, f"{path_stem}.png")
