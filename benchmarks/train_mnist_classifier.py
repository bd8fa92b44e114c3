"""Train the small MNIST classifier whose features define "MNIST FID" (run once; ~3 CPU minutes).

    nice -n 10 .venv/bin/python benchmarks/train_mnist_classifier.py \
        [--data ../shared/data/mnist/mnist.npz] [--out coopnets/assets/mnist_classifier.pt] [--epochs 3]

Prints the test accuracy of the shipped (fp16) weights; it is also stored in the file's meta.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from common import shared_data
from coopnets.errors import UserError
from coopnets.metrics.mnist_classifier import DEFAULT_WEIGHTS, train_mnist_classifier


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data() / "mnist" / "mnist.npz"))
    p.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = p.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"skipped: MNIST not found at {args.data}", file=sys.stderr)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        meta = train_mnist_classifier(args.data, args.out, epochs=args.epochs, seed=args.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"test accuracy {meta['test_accuracy']:.4f} ({meta['test_examples']} images), "
          f"{meta['seconds']:.0f}s, weights written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
