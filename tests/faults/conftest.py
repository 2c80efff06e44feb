"""Session fixtures of the fault campaign: one fork server (vqkit imported once), one corpus of intact
files of every kind, one uninterrupted reference run for the kill tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import CliServer, Corpus, Reference, build_corpus, reference_run


@pytest.fixture(scope="session")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    with CliServer(tmp_path_factory.mktemp("fault-server")) as server:
        yield server


@pytest.fixture(scope="session")
def corpus(cli_server: CliServer, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(cli_server, tmp_path_factory.mktemp("fault-corpus"))


@pytest.fixture(scope="session")
def reference(cli_server: CliServer, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference_run(cli_server, tmp_path_factory.mktemp("fault-reference"))
