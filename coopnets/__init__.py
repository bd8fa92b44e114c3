"""coopnets: cooperative learning of an energy-based descriptor and a top-down generator
(CoopNets; Xie, Lu, Gao, Zhu, Wu, TPAMI 2020), and the two algorithms it is built from."""
from .algorithms import abp_step, coop_step, descriptor_step
from .checkpoint import load_run
from .config import PRESETS, Config, resolve
from .data import load_images
from .demo import asset
from .errors import TrainingDiverged, UserError
from .export import export_run
from .langevin import descriptor_log_prob, generator_log_posterior, langevin
from .nets import DESCRIPTORS, GENERATORS, build_descriptor, build_generator
from .sampling import generate
from .training import train

load = load_run  # coopnets.load(path, device="cpu"): a run folder, checkpoint or export folder

__version__ = "0.1.0"
__all__ = ["asset", "Config", "PRESETS", "resolve", "train", "generate", "load", "load_run",
           "export_run", "load_images", "langevin", "descriptor_log_prob",
           "generator_log_posterior", "coop_step", "descriptor_step", "abp_step",
           "build_descriptor", "build_generator", "DESCRIPTORS", "GENERATORS", "UserError",
           "TrainingDiverged"]
