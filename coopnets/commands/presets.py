"""List the presets and what each sets."""
from __future__ import annotations


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    from ..config import PRESETS
    for name, values in PRESETS.items():
        print(f"{name:15s} {' '.join(f'{k}={v}' for k, v in values.items())}")
    return 0
