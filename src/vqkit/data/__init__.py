"""Data sources: image and speech folders (their shared file rules in :mod:`.files`) and the scikit-image photos
bundled for offline demos."""
