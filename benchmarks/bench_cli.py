"""How fast the command line answers ``--help`` (target: at most 0.3 s), as a table.

    python benchmarks/bench_cli.py [--repeats 7]

Each row runs ``python -m coopnets ... --help`` in a fresh process ``--repeats`` times and
prints the median and the fastest wall-clock, plus ``python -c pass`` as the floor of starting
the interpreter at all.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import REPO, code_version

CASES = [["-c", "pass"], ["-m", "coopnets", "--help"], ["-m", "coopnets", "train", "--help"],
         ["-m", "coopnets", "eval", "--help"], ["-m", "coopnets", "sample", "--help"]]


def timed(argv) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    print(f"code {code_version()}, python {sys.version.split()[0]}, {args.repeats} runs each")
    print("| command | median s | fastest s | target |")
    print("|---|---|---|---|")
    for case in CASES:
        times = [timed(case) for _ in range(args.repeats)]
        name = "python " + " ".join(case)
        target = "" if case[0] == "-c" else ("ok" if statistics.median(times) <= 0.3 else "MISSED")
        print(f"| `{name}` | {statistics.median(times):.3f} | {min(times):.3f} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
