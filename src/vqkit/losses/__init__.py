"""Training losses beyond the quantizers' own: speech reconstruction losses and GAN discriminators."""

from .speech import (
    MEL_RESOLUTIONS,
    MPD_CHANNELS,
    MPD_CHANNELS_SMALL,
    MPD_PERIODS,
    STFT_RESOLUTIONS,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    PeriodDiscriminator,
    ResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    multi_resolution_mel_loss,
    multi_resolution_stft_loss,
)

__all__ = [
    "MEL_RESOLUTIONS",
    "MPD_CHANNELS",
    "MPD_CHANNELS_SMALL",
    "MPD_PERIODS",
    "STFT_RESOLUTIONS",
    "MultiPeriodDiscriminator",
    "MultiResolutionDiscriminator",
    "PeriodDiscriminator",
    "ResolutionDiscriminator",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "multi_resolution_mel_loss",
    "multi_resolution_stft_loss",
]
