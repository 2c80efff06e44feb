"""Training harness: config and presets, the loop, checkpoints, losses and logs."""

from .config import PRESETS, TrainConfig, load_config
from .loop import train

__all__ = ["PRESETS", "TrainConfig", "load_config", "train"]
