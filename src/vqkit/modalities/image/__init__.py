"""The image modality: signal I/O (:mod:`.io`), datasets (:mod:`.datasets`, :mod:`.photos`), the codec's
adapter (:mod:`.codec`), training losses (:mod:`.objective`), evaluation scores (:mod:`.scorer`), the sweep
report (:mod:`.report`), all held by :data:`IMAGE` (:mod:`.modality`)."""

from .modality import IMAGE, ImageModality

__all__ = ["IMAGE", "ImageModality"]
