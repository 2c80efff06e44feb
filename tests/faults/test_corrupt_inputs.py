"""Every kind of file vqkit reads, byte-flipped (magic, middle, end) and truncated (to 0 bytes, to half),
fed to the command that reads it and to its Python reader: refused with exit 2 (1 for per-file codec
errors), one `vqkit: error:` line naming the file, no traceback; a ValueError through the API. Damage
that no reader can detect (a JPEG or PCM byte, lost trailing whitespace) passes only when the harness
verifies that reason. The script adds more positions and lengths."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import QUICK_DAMAGES, CliServer, Corpus, Damage, Kind, available_kinds, run_corrupt_case

CASES = [(kind, damage) for kind in available_kinds() for damage in QUICK_DAMAGES]


@pytest.mark.parametrize(("kind", "damage"), CASES, ids=[f"{k.slug}-{d.slug}" for k, d in CASES])
def test_corrupt_file_is_refused(kind: Kind, damage: Damage, cli_server: CliServer, corpus: Corpus,
                                 tmp_path: Path) -> None:
    result = run_corrupt_case(cli_server, corpus, kind, damage, tmp_path)
    if result.status == "FAILED":
        pytest.fail(f"{result.label} ({kind.reader}): `{result.command}`\n  - " + "\n  - ".join(result.problems)
                    + f"\n  stderr: {result.excerpt}", pytrace=False)
