"""Run folders and what identifies a run: its config with ``data`` resolved to an absolute
path, plus a cheap fingerprint of the data (``data.json``). ``find_run_dir`` picks the run a
``train`` call continues (or a new numbered one); ``check_run_dir`` vets ``--run-dir``;
``check_writable`` fails before the data are loaded when the run cannot be written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from . import distributed as dist
from .checkpoint import LATEST, config_dict, load_checkpoint
from .config import BEFORE_FIELD, Config, describe_differences, differences, migrate
from .data import IMAGE_EXTS
from .errors import UserError, write_error

RUN_RE = re.compile(r"^(\d{5})-")
DATA_FILE = "data.json"  # the run's data: absolute path and fingerprint


def run_name(cfg: Config) -> str:
    tag = cfg.preset or Path(cfg.data).stem or "run"
    return f"{cfg.algorithm}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', tag)}"


def data_identity(data: str) -> dict:
    """The data's absolute path and a cheap fingerprint: for a folder, a hash of the relative
    names and sizes of its image files; for a file, of its size and first and last MiB.
    Modification times are left out, so a copy of the data (say, on a scratch disk) is the
    same data, while an added, removed, renamed or resized file is not."""
    path = Path(data).expanduser()
    if not data or not path.exists():
        return {"path": str(path), "fingerprint": ""}  # load_images says what is wrong
    path = path.resolve()
    h, files, size = hashlib.sha256(), 0, 0
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTS and p.is_file():
                n = p.stat().st_size
                files, size = files + 1, size + n
                h.update(f"{p.relative_to(path).as_posix()}\0{n}\n".encode())
    else:
        files, size = 1, path.stat().st_size
        h.update(f"{size}\n".encode())
        with open(path, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return {"path": str(path), "fingerprint": h.hexdigest()[:16], "files": files, "bytes": size}


def _saved_run(folder: Path) -> tuple[dict, dict | None] | None:
    """(config, data identity or None) recorded in a run folder; None if it holds no run."""
    try:
        saved = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        if not (folder / LATEST).is_file():
            return None
        saved = load_checkpoint(folder)["config"]
    if not isinstance(saved, dict):
        return None
    try:
        ident = json.loads((folder / DATA_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        ident = None  # a run saved before data were fingerprinted
    return saved, ident if isinstance(ident, dict) else None


def _mismatch(saved: dict, ident: dict | None, cfg: Config, data_id: dict, given: str):
    """(fields that differ, what changed in the data or "") between a saved run and ``cfg``
    (whose ``data`` is absolute). A run saved before paths were resolved holds ``--data`` as
    typed: it is the same path when that string is the one given now or resolves, from here,
    to the same folder."""
    old = saved.get("data", "")
    if isinstance(old, str) and old and not Path(old).is_absolute() and (
            old == given or str(Path(old).expanduser().resolve()) == cfg.data):
        saved = {**saved, "data": cfg.data}
    diffs = differences(saved, config_dict(cfg))
    content = ""
    if ("data" not in diffs and ident and ident.get("fingerprint") and data_id.get("fingerprint")
            and ident["fingerprint"] != data_id["fingerprint"]):
        def count(d):
            return f"{d.get('files', '?')} file(s), {d.get('bytes', 0) / 1e6:.3g} MB"
        content = (f"the data at {cfg.data} are not what the run was trained on "
                   f"({count(ident)} then, {count(data_id)} now)")
    return diffs, content, saved


def _flags(values: dict, keys) -> str:
    """The train flags that set ``keys`` to ``values``: ``--des-steps 3 --des-noise false``."""
    return " ".join(f"--{k.replace('_', '-')} {json.dumps(values[k])}" for k in keys)


def _resume_flags(saved: dict, diffs: list) -> str:
    """The train flags that give today's config the saved run's values where they differ, or ""
    where no flags can (a field this version no longer has, a value no flag takes). Fields
    renamed or added since the run was saved count as they ran (``migrate``)."""
    ran = {**dataclasses.asdict(Config()), **migrate(saved, saved=True)}
    names = {f.name for f in dataclasses.fields(Config)}
    if not diffs or any(k not in names or not isinstance(ran[k], (str, int, float, bool))
                        for k in diffs):
        return ""
    return _flags(ran, diffs)


def _refusal(folder: Path, diffs: list, content: str, saved: dict, cfg: Config, how: str) -> str:
    if content:
        return f"{content}; {folder} was not resumed: {how}"
    if diffs == ["steps"]:
        return (f"{folder} decays its learning rates over its --steps {saved.get('steps')} "
                f"(lr_final {saved.get('lr_final')} < 1), so --steps {cfg.steps} would change its "
                f"schedule; resume with --steps {saved.get('steps')}, or {how}")
    flags = _resume_flags(saved, diffs)
    if diffs and set(diffs) <= set(BEFORE_FIELD):  # only a default that changed since it ran
        return (f"{folder} was trained before today's default "
                f"({describe_differences(saved, config_dict(cfg), diffs)}); resume it as it ran "
                f"with {flags}, or {how}")
    as_it_ran = f"resume it as it ran with {flags}, or " if flags else ""
    return (f"{folder} holds a run with a different configuration "
            f"({describe_differences(saved, config_dict(cfg), diffs)}); it was left as it is: "
            f"{as_it_ran}{how}")


def find_run_dir(cfg: Config, new_run: bool = False, data_id: dict | None = None,
                 given: str | None = None) -> Path:
    """The latest run folder in ``cfg.outdir`` with the same configuration and data, or a new
    one. The same configuration on other content at the same path, or another ``--steps`` under
    a decaying learning rate, is refused (UserError) rather than resumed or silently forked."""
    out = Path(cfg.outdir)
    runs = sorted((p for p in out.glob("*") if p.is_dir() and RUN_RE.match(p.name)), reverse=True)
    if not new_run:
        given = given or cfg.data
        data_id = data_id or data_identity(cfg.data)
        if data_id["fingerprint"]:
            cfg = dataclasses.replace(cfg, data=data_id["path"])
        near = other = None
        for p in runs:
            try:
                got = _saved_run(p)
            except UserError:  # an unreadable checkpoint in a folder without config.json
                continue
            if got is None:
                continue
            diffs, content, saved = _mismatch(*got, cfg, data_id, given)
            if not diffs and not content:
                return p
            if near is None and (content or diffs == ["steps"]):
                near = (p, diffs, content, saved)
            if (other is None and not content and "data" not in diffs
                    and saved.get("preset") == cfg.preset):
                other = (p, diffs, saved)
        if near:
            raise UserError(_refusal(*near, cfg, "add --new-run to start a new run"))
    number = int(RUN_RE.match(runs[0].name).group(1)) + 1 if runs else 0
    folder = out / f"{number:05d}-{run_name(cfg)}"
    if not new_run and other and dist.is_main():  # e.g. a preset that changed since it ran
        print(_another_configuration(*other, cfg, folder), file=sys.stderr)
    return folder


def _another_configuration(p: Path, diffs: list, saved: dict, cfg: Config, folder: Path) -> str:
    flags = _resume_flags(saved, diffs)
    return (f"note: {p} holds {cfg.preset or 'a run'} on these data with another configuration "
            f"({describe_differences(saved, config_dict(cfg), diffs)}); it was left as it is and "
            f"{folder.name} starts." + (f" To resume it instead, add {flags}" if flags else ""))


def check_run_dir(run_dir: Path, cfg: Config, data_id: dict, given: str) -> None:
    """``--run-dir``: a folder (new, empty, or holding this very run), never a file or
    another run, whose config.json is then left as it is."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir} is a file, not a folder")
    got = _saved_run(run_dir) if run_dir.is_dir() else None
    if got is None:
        return
    diffs, content, saved = _mismatch(*got, cfg, data_id, given)
    if diffs or content:
        raise UserError(_refusal(run_dir, diffs, content, saved, cfg,
                                 "give another --run-dir, or leave it out to start a new numbered run"))


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return p


def check_writable(folder: Path) -> None:
    """Fail now, before the data are loaded, if the run cannot be written: a read-only or full
    file system, no permission, or a file where a folder belongs (writes and removes a 1 MiB
    probe in the nearest existing folder)."""
    p = _existing(folder)
    if not p.is_dir():
        raise UserError(f"cannot create {folder}: {p} is a file, not a folder")
    probe = p / f".coopnets-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(bytes(1 << 20))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise write_error(folder, e, "nothing was written") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
