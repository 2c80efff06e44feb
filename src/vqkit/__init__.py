"""vqkit: discrete tokenizers for neural compression (RFSQ, SimVQ and their baselines)."""

__version__ = "0.1.0"
