"""The audio (speech) modality: signal I/O and datasets (:mod:`.io`), the codec's adapter (:mod:`.codec`),
training losses (:mod:`.losses`, :mod:`.objective`), evaluation scores (:mod:`.scorer`), the sweep report
(:mod:`.report`), all held by :data:`AUDIO` (:mod:`.modality`)."""

from .modality import AUDIO, AudioModality

__all__ = ["AUDIO", "AudioModality"]
