"""Soak test of resuming: a run is stopped many times at random moments by SIGKILL, SIGINT or
SIGTERM (start-up, mid-step, mid-checkpoint) and restarted with the same command each time;
its final parameters, optimiser states and logs must equal those of an uninterrupted run.

    python benchmarks/bench_soak.py [--steps 600] [--stops 30] [--algorithm coop] [--seed 0]

Prints a table per signal (sent, exit codes seen, checkpoint steps reached) and the final
comparison; exits 1 if anything differs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np
import torch

from coopnets.checkpoint import load_checkpoint

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
# SIGINT in the first moments of interpreter start-up, before coopnets runs, ends Python with
# -2 (its own handling of an uncaught KeyboardInterrupt); afterwards it is 130.
EXPECTED = {"SIGKILL": (-9,), "SIGINT": (130, -2), "SIGTERM": (143,)}


def command(data: Path, out: Path, a) -> list[str]:
    extra = ["--gen-steps", "5"] if a.algorithm == "abp" else (
        ["--des-init", "persistent"] if a.algorithm == "descriptor" else [])
    return [sys.executable, "-m", "coopnets", "train", "--preset", "smoke", "--data", str(data),
            "--algorithm", a.algorithm, *extra, "--steps", str(a.steps), "--ckpt-every", "25",
            "--log-every", "5", "--sample-every", "50", "--lr-final", "0.5", "--outdir", str(out),
            "--progress", "false"]


def tensors(run: Path) -> dict:
    ck = load_checkpoint(run)
    out = {"step": torch.tensor(ck["step"])}
    for part in ("descriptor", "generator"):
        out.update({f"{part}.{k}": v for k, v in ck[part].items()})
    for part in ("opt_des", "opt_gen"):
        for i, st in ck[part]["state"].items():
            out.update({f"{part}.{i}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    out.update({f"state.{k}": v for k, v in ck["state"].items() if v is not None})
    return out


def wait_for_progress(out: Path, proc) -> None:
    """Until the run's stats.jsonl has grown since this launch began (or the process ended)."""
    def size():
        logs = list(out.glob("0*/stats.jsonl"))
        return logs[0].stat().st_size if logs else -1
    start = size()
    while proc.poll() is None and size() <= start:
        time.sleep(0.05)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--stops", type=int, default=30, help="most signals to send")
    p.add_argument("--algorithm", default="coop", choices=("coop", "descriptor", "abp"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-wait", type=float, default=1.5,
                   help="longest wait (s) after the loop has logged, before a signal")
    p.add_argument("--startup", type=float, default=0.25, help="fraction of stops sent during start-up")
    a = p.parse_args()
    t0 = time.time()
    rnd = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    data = tmp / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8))
    env = dict(os.environ, PYTHONPATH=str(common.REPO), OMP_NUM_THREADS="1")

    subprocess.run(command(data, tmp / "ref", a), env=env, check=True, capture_output=True)
    ref = next((tmp / "ref").iterdir())

    seen = {name: {"sent": 0, "codes": {}, "steps": []} for name in SIGNALS}
    sent, launches, other = 0, 0, []
    while True:
        launches += 1
        proc = subprocess.Popen(command(data, tmp / "soak", a), env=env,  # SIGINT as in a terminal:
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        name = None
        if sent < a.stops:
            try:
                if rnd.random() < a.startup:  # a stop during start-up
                    proc.wait(timeout=rnd.uniform(0.2, 3.0))
                else:  # once the loop runs (stats.jsonl grows), at a random moment of it
                    wait_for_progress(tmp / "soak", proc)
                    proc.wait(timeout=rnd.uniform(0.0, a.max_wait))
            except subprocess.TimeoutExpired:
                name = rnd.choice(list(SIGNALS))
                proc.send_signal(SIGNALS[name])
                sent += 1
        _, err = proc.communicate()
        runs = list((tmp / "soak").glob("0*"))
        step = load_checkpoint(runs[0])["step"] if runs and (runs[0] / "latest.pt").is_file() else 0
        if name:
            s = seen[name]
            s["sent"] += 1
            s["codes"][proc.returncode] = s["codes"].get(proc.returncode, 0) + 1
            s["steps"].append(step)
            # a signal after the run has finished (step == steps) may end the exiting
            # interpreter with its default action (-15); nothing is left to save then
            after_end = step == a.steps and proc.returncode in (0, -int(SIGNALS[name]))
            bad_exit = proc.returncode not in EXPECTED[name] and not after_end
            if bad_exit or (name != "SIGKILL" and "Traceback" in err):
                other.append(f"{name}: exit {proc.returncode}: {err.strip()[-300:]}")
        elif proc.returncode == 0:
            break
        else:
            other.append(f"unsignalled exit {proc.returncode}: {err.strip()[-300:]}")
            break
    run = next((tmp / "soak").glob("0*"))
    a_t, b_t = tensors(ref), tensors(run)
    same_keys = a_t.keys() == b_t.keys()
    diff = max(((a_t[k].double() - b_t[k].double()).abs().max().item() for k in a_t if k in b_t
                and a_t[k].numel()), default=float("nan"))
    equal = same_keys and all(torch.equal(a_t[k], b_t[k]) for k in a_t)
    rows = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
    logged_once = rows == list(range(5, a.steps + 1, 5))
    temps = list(run.glob(".latest.pt.*.tmp"))

    print(f"soak: {a.algorithm}, smoke preset, {a.steps} steps, lr_final 0.5, checkpoints every 25, "
          f"seed {a.seed}; {launches} launches; {time.time() - t0:.0f} s wall")
    print(f"{'signal':<8} {'sent':>4}  {'exit codes seen':<24} checkpoint step after each stop")
    for name, s in seen.items():
        codes = ", ".join(f"{c}x{n}" for c, n in sorted(s["codes"].items()))
        print(f"{name:<8} {s['sent']:>4}  {codes:<24} {' '.join(map(str, s['steps']))}")
    print(f"{'check':<44} result")
    print(f"{'final parameters, Adam states, chains equal':<44} {'yes' if equal else 'NO'} "
          f"(max |diff| {diff:.3g}, {len(a_t)} tensors)")
    print(f"{'stats.jsonl: every logged step exactly once':<44} {'yes' if logged_once else 'NO'}")
    print(f"{'stale .latest.pt.*.tmp files':<44} {len(temps)}")
    print(f"{'unexpected exits or tracebacks':<44} {len(other)}")
    for line in other:
        print("  " + line)
    ok = equal and logged_once and not temps and not other
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
