"""A run whose codebook collapsed says so when it ends (it used to end without a word)."""

from __future__ import annotations

from vqkit.train.log import collapse_warning


def test_collapse_is_named_by_usage_or_perplexity() -> None:
    assert "0.02% of codes used" in collapse_warning({"usage": 0.0002, "perplexity": 1.0})
    assert "perplexity 1.50" in collapse_warning({"usage": 0.5, "perplexity": 1.5})  # few codes carry all mass
    assert collapse_warning({"usage": 0.3, "perplexity": 40.0}) == ""
    assert collapse_warning({}) == ""  # no validation: nothing to judge
