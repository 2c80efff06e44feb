"""The one error of :mod:`vqkit.interop`, and the helper that names every refused option at once."""

from __future__ import annotations

from collections.abc import Iterable


class ConversionError(ValueError):
    """A module or state dict that cannot be converted exactly; the message names each reason."""


def refuse(owner: str, problems: Iterable[str]) -> None:
    """Raise :class:`ConversionError` listing ``problems`` (one per refused option), if there are any."""
    found = list(problems)
    if found:
        raise ConversionError(f"{owner}: cannot convert exactly: " + "; ".join(found))
