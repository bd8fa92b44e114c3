"""Score a run (samples are generated), a folder/zip of images, or an .npz/.npy of samples
with one metric; the result is printed and appended to a JSON log.

    coopnets eval SOURCE --metric fid|kid|is|parzen|mnist-fid|psnr|ssim [--ref PATH] ...

A result is appended as one JSON line to ``<run>/metrics.jsonl`` when SOURCE is a run, or to
``--log PATH``. The library call behind it is ``coopnets.evaluate``.
"""
from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError

METRICS = ("fid", "kid", "is", "parzen", "mnist-fid", "psnr", "ssim")  # = evaluation.METRICS


def _has_ema(source) -> bool:
    """Whether a run (or its export) samples with a moving average of the generator (--gen-ema)."""
    from ..checkpoint import load_checkpoint
    try:
        return bool(load_checkpoint(source)["config"].get("gen_ema"))
    except UserError:  # samples that did not come from a checkpoint
        return False


def add_arguments(p) -> None:
    p.add_argument("source", help="run folder or checkpoint, folder/zip of images, or .npz/.npy of samples")
    p.add_argument("--metric", required=True, choices=METRICS)
    p.add_argument("--ref", help="reference images (or a statistics .npz for fid/mnist-fid); "
                                 "the test set for parzen")
    p.add_argument("--ref-subset", default="", help="START:STOP of the reference set")
    p.add_argument("--ref-key", default="", help="array name in a reference .npz (e.g. x_test)")
    p.add_argument("--validation", help="parzen: images that choose the bandwidth")
    p.add_argument("--validation-subset", default="", help="START:STOP, e.g. 50000:60000")
    p.add_argument("--validation-key", default="", help="array name in the validation .npz")
    p.add_argument("--source-key", default="", help="array name in a SOURCE .npz")
    p.add_argument("--num-samples", "-n", type=int, default=None,
                   help="samples to generate from a run (default 10000) or the first N images of "
                        "SOURCE (default all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and KID/pair subsets)")
    p.add_argument("--mode", default="revise", choices=("gen", "revise", "des"),
                   help="which samples of a run to score (default revise)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--live-generator", action="store_true",
                   help="a --gen-ema run: score the trained generator, not its moving average")
    p.add_argument("--inception", help="Inception TorchScript file (default $COOPNETS_INCEPTION)")
    p.add_argument("--classifier", help="is: TorchScript classifier; mnist-fid: classifier weights")
    p.add_argument("--image-size", type=int, default=0, help="resize images read from disk to N x N")
    p.add_argument("--center-crop", action="store_true", help="centre-crop to a square before resizing")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--splits", type=int, default=10, help="is: number of splits")
    p.add_argument("--sigmas", default="", help="parzen: comma-separated bandwidths (default logspace(-1,0,10))")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="Inception precision")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached reference statistics")
    p.add_argument("--save-stats", help="fid/mnist-fid: also write SOURCE's statistics to this .npz")
    p.add_argument("--log", help="append the JSON result here (default: <run>/metrics.jsonl for runs)")


def _sigmas(text: str):
    if not text:
        return None
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise UserError(f"--sigmas must be comma-separated numbers, got {text!r}") from None


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _check_run_against(args, size: dict):
    """Metrics that compare images pixel for pixel: read the reference (and validation) images
    and check their shape, and for psnr/ssim their count, against the run's samples before any
    sampling. Returns them as tensors, so they are read once."""
    from ..checkpoint import load_checkpoint
    from ..evaluation import DEFAULT_RUN_SAMPLES, ImageSource
    try:
        ck = load_checkpoint(args.source)
    except UserError:  # no checkpoint yet: sampling says so
        return args.ref, args.validation
    shape = (ck["channels"], ck["image_size"], ck["image_size"])
    ref = ImageSource(args.ref_subset, args.ref_key, **size).read(args.ref)
    val = (ImageSource(args.validation_subset, args.validation_key, **size).read(args.validation)
           if args.validation else None)
    for what, imgs in (("reference", ref), ("validation", val)):
        if imgs is not None and tuple(imgs.shape[1:]) != shape:
            raise UserError(f"the run's samples are {shape} (C, H, W) but the {what} images are "
                            f"{tuple(imgs.shape[1:])}; use --image-size N, or data with the same "
                            "channels")
    n = args.num_samples or DEFAULT_RUN_SAMPLES
    if args.metric in ("psnr", "ssim") and n != len(ref):
        raise UserError(f"{args.metric} compares images one to one, but {n} samples would be drawn "
                        f"for {len(ref)} reference images; pass --num-samples {len(ref)}")
    return ref, val


def run(args) -> int:
    from ..distributed import pick_device
    from ..evaluation import ImageSource, check_inputs, evaluate, git_commit, is_run, load_samples
    t0 = time.time()
    if not Path(args.source).exists():
        raise UserError(f"SOURCE {args.source} does not exist")
    if args.num_samples is not None and args.num_samples <= 0:
        raise UserError("--num-samples must be positive")
    if args.batch_size <= 0:
        raise UserError("--batch-size must be positive")
    sigmas = _sigmas(args.sigmas)
    check_inputs(args.metric, args.ref, args.validation, inception=args.inception,
                 classifier=args.classifier)
    device = pick_device(args.device)
    size = dict(image_size=args.image_size, center_crop=args.center_crop)
    ref, validation = args.ref, args.validation
    if is_run(args.source) and args.metric in ("parzen", "psnr", "ssim"):
        ref, validation = _check_run_against(args, size)  # before sampling 10,000 images
    x = load_samples(args.source, args.num_samples, mode=args.mode, seed=args.seed,
                     batch_size=args.batch_size, device=device,
                     read=ImageSource(key=args.source_key, **size), ema=not args.live_generator)
    result = evaluate(
        x, args.metric, ref, validation=validation,
        ref_read=ImageSource(args.ref_subset, args.ref_key, **size),
        validation_read=ImageSource(args.validation_subset, args.validation_key, **size),
        inception=args.inception, classifier=args.classifier, batch_size=args.batch_size,
        device=device, precision=args.precision, threads=args.threads or None,
        use_cache=not args.no_cache, save_stats=args.save_stats, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, splits=args.splits, sigmas=sigmas, seed=args.seed)
    run_source = is_run(args.source)
    record = {"metric": args.metric, **result, "source": str(Path(args.source).resolve()),
              "ref": str(Path(args.ref).resolve()) if args.ref else None,
              "ref_subset": args.ref_subset or None, "ref_key": args.ref_key or None,
              "validation": str(Path(args.validation).resolve()) if args.validation else None,
              "num_samples": len(x), "seed": args.seed, "mode": args.mode if run_source else None,
              "generator": ("live" if args.live_generator else "ema")
              if run_source and _has_ema(args.source) else None,
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.time() - t0, 2), "commit": git_commit()}
    record = {k: _json_safe(v) for k, v in record.items()}
    width = max(6, *(len(k) for k in result))
    print(f"{'metric':<{width}}  {args.metric}")
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    path = Path(args.log) if args.log else None
    if path is None and run_source:
        src = Path(args.source)
        path = (src if src.is_dir() else src.parent) / "metrics.jsonl"
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"logged to {path}")
    return 0
