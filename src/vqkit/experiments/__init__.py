"""Experiments built on the library: the quick demo now, the papers' comparisons later."""
