"""coopnets: cooperative learning of an energy-based descriptor and a top-down generator
(CoopNets; Xie, Lu, Gao, Zhu, Wu, TPAMI 2020), and the two algorithms it is built from.

The names below are imported on first use, so ``import coopnets`` (and ``coopnets --help``)
stays light until a function is actually called.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {  # name -> "module" that defines it, or "module:attribute" for an alias
    "Config": "config", "PRESETS": "config", "resolve": "config",
    "train": "training",
    "generate": "sampling",
    "load_run": "checkpoint", "load": "checkpoint:load_run", "export_run": "export",
    "write_report": "report",
    "load_images": "data", "asset": "data",
    "evaluate": "evaluation", "load_samples": "evaluation",
    "complete": "completion", "complete_images": "completion",
    "interpolate": "interpolation", "latent_path": "interpolation",
    "langevin": "langevin", "revise": "langevin", "descriptor_log_prob": "langevin",
    "generator_log_posterior": "langevin",
    "coop_step": "algorithms", "descriptor_step": "algorithms", "abp_step": "algorithms",
    "STEPS": "algorithms", "Nets": "algorithms", "Batch": "algorithms",
    "build_descriptor": "models", "build_generator": "models", "DESCRIPTORS": "models",
    "GENERATORS": "models",
    "ExampleRNG": "seeding",
    "UserError": "errors", "TrainingDiverged": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, _, attr = _EXPORTS[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", __name__), attr or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'coopnets' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
