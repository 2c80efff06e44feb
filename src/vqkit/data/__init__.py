"""Data sources: image folders and the scikit-image photos bundled for offline demos."""
