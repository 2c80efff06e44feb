"""Image tokenizers: encoder + any vqkit quantizer + decoder, saved as safetensors + config.json."""

from .config import FrozenArgs, TokenizerConfig
from .conv import ConvDecoder, ConvEncoder
from .discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from .registry import ARCHITECTURES, QUANTIZERS, Backbone, build_backbone, build_quantizer
from .tokenizer import Tokenizer
from .vqgan import VQGANDecoder, VQGANEncoder

__all__ = [
    "ARCHITECTURES",
    "QUANTIZERS",
    "Backbone",
    "ConvDecoder",
    "ConvEncoder",
    "FrozenArgs",
    "PatchDiscriminator",
    "Tokenizer",
    "TokenizerConfig",
    "VQGANDecoder",
    "VQGANEncoder",
    "build_backbone",
    "build_quantizer",
    "hinge_d_loss",
    "hinge_g_loss",
]
