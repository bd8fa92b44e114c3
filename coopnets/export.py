"""Export a trained run as a folder to share: weights as safetensors, a config, a model card.

    OUT/descriptor.safetensors   descriptor state_dict
    OUT/generator.safetensors    generator state_dict, BatchNorm running statistics included
                                 (a --gen-ema run: the moving average, which it samples with)
    OUT/config.json              the run's config fields, plus "model": {channels, image_size,
                                 arch_version, step}
    OUT/README.md                what was trained on what, how far, its last logged stats and
                                 evaluations, and the commands that sample it

safetensors holds tensors only, so loading an export runs no code. An export folder loads
wherever a run folder does (``coopnets.load``, ``coopnets sample OUT``); optimiser states,
RNG states and training logs are not exported, so it cannot be resumed.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from .checkpoint import LATEST, load_checkpoint, sampling_generator, source_dir
from .config import migrate
from .errors import UserError

STATS_SHOWN = ("f_gap", "langevin_move", "gen_loss")
METRIC_COLUMNS = ("metric", "value", "std", "mode", "num_samples", "seed", "time")


def export_run(run_or_ckpt, out_dir) -> Path:
    """Write the export folder ``out_dir`` of a run folder, checkpoint or export; returns it."""
    from safetensors.torch import save_file
    ckpt = load_checkpoint(run_or_ckpt)
    src = source_dir(run_or_ckpt)
    out = Path(out_dir).expanduser()
    if out.resolve() == src.resolve() or (out / LATEST).exists():
        raise UserError(f"--out {out} is a run folder; export into a new folder, e.g. {src}/export")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    weights = {"descriptor": ckpt["descriptor"], "generator": sampling_generator(ckpt)}
    for net in ("descriptor", "generator"):
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in weights[net].items()}
        save_file(tensors, str(out / f"{net}.safetensors"), metadata={"format": "pt"})
    model = {"channels": ckpt["channels"], "image_size": ckpt["image_size"],
             "arch_version": ckpt["arch_version"], "step": ckpt["step"]}
    if ckpt.get("frames"):  # a video run: frames per training example
        model["frames"] = ckpt["frames"]
    config = migrate(ckpt["config"], saved=True)  # today's field names, whatever the run was saved with
    (out / "config.json").write_text(json.dumps({**config, "model": model}, indent=2) + "\n")
    (out / "README.md").write_text(model_card(ckpt, src, out))
    return out


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a .jsonl file, skipping blank or broken lines; [] if it is absent."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v).replace("|", "\\|")


def model_card(ckpt: dict, src: Path, out: Path) -> str:
    """README.md of an export: data, preset, algorithm, steps, last stats, metrics, usage."""
    cfg = ckpt["config"]
    lines = [f"# {src.name}", "",
             "A CoopNets model (cooperative descriptor and generator) exported by `coopnets export`.", "",
             f"- data: `{cfg.get('data') or '-'}`",
             f"- preset: `{cfg.get('preset') or '-'}`",
             f"- algorithm: `{cfg.get('algorithm')}`",
             f"- steps trained: {ckpt['step']} (of {cfg.get('steps')} configured)",
             f"- images: {ckpt['channels']} channel(s), {ckpt['image_size']}x{ckpt['image_size']}",
             *([f"- generator: the moving average of its weights (`--gen-ema {cfg['gen_ema']}`), "
                "which the run samples with; the trained weights stay in the run's checkpoints"]
               if ckpt.get("generator_ema") is not None else []),
             ""]
    stats = [r for r in read_jsonl(src / "stats.jsonl") if r.get("step", 0) <= ckpt["step"]]
    if stats:  # the last line logged up to the exported step (a snapshot may be older)
        last = stats[-1]
        shown = ", ".join(f"{k} = {_fmt(last[k])}" for k in STATS_SHOWN if k in last)
        lines += ["## Last logged training statistics", "",
                  f"step {last.get('step', '?')}: {shown or 'none of ' + ', '.join(STATS_SHOWN)}", ""]
    metrics = read_jsonl(src / "metrics.jsonl")
    if metrics:
        lines += ["## Evaluations (`coopnets eval`)", "",
                  "| " + " | ".join(METRIC_COLUMNS) + " |",
                  "|" + "---|" * len(METRIC_COLUMNS)]
        lines += ["| " + " | ".join(_fmt(m.get(c)) for c in METRIC_COLUMNS) + " |" for m in metrics]
        lines.append("")
    where = shlex.quote(str(out))
    lines += ["## Sampling", "",
              "```",
              f"coopnets sample {where} -n 64 --out samples.png",
              f"coopnets sample {where} -n 64 --mode gen --out samples-gen.png",
              "```", "",
              "or in Python:", "",
              "```python",
              "import coopnets",
              f"cfg, descriptor, generator, info = coopnets.load({str(out)!r})",
              f"x = coopnets.generate({str(out)!r}, 64, 'revise', seed=0)  # (64, C, H, W) in [-1, 1]",
              "```", ""]
    return "\n".join(lines)
