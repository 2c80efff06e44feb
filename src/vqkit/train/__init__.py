"""Training harness: config (sections, the converter from option names and the old flat form, presets), the
loop, checkpoints, losses and logs."""

from .config import TrainConfig
from .convert import load_config, read_run_config
from .loop import train
from .presets import PRESETS

__all__ = ["PRESETS", "TrainConfig", "load_config", "read_run_config", "train"]
