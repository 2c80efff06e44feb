"""``python -m vqkit.cli``: the ``vqkit`` command."""

from .main import main

raise SystemExit(main())
