"""Smoke test of benchmarks/train.py at toy size, so that the benchmark does not rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "train.py"


def _load():
    if str(PATH.parent) not in sys.path:  # as when run as a script: its folder holds _common.py
        sys.path.insert(0, str(PATH.parent))
    spec = importlib.util.spec_from_file_location("bench_train", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_every_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load()
    threads = torch.get_num_threads()
    out = tmp_path / "train.json"
    try:
        bench.main(["--quick", "--threads", "1", "--only", "rfsq_conv/rfsq,vqgan/simvq-8192,speech/fsq",
                    "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    records = json.loads(out.read_text())["records"]
    assert [r["case"] for r in records] == ["rfsq_conv/rfsq-4x1024", "vqgan/simvq-8192", "speech/fsq-4096"]
    for r in records:
        assert {"identity", "vqkit"} <= set(r["median_s"]) and all(t > 0 for t in r["median_s"].values())
        assert r["share_vqkit"] < 1
    table = capsys.readouterr().out
    assert "| vqgan/simvq-8192 | eager | 13 |" in table and "Target" in table


def test_identity_and_adapter_honour_the_contract() -> None:
    bench = _load()
    z = torch.randn(2, 3, 4, 5)
    out = bench.IdentityQuantizer(5)(z)
    assert out.quantized is z and out.indices.shape == (2, 3, 4) and float(out.loss) == 0
    vqp = pytest.importorskip("vector_quantize_pytorch")
    adapter = bench.VqpQuantizer(vqp.ResidualFSQ(dim=5, levels=[4] * 5, num_quantizers=2), 5, 1024, 2)
    out = adapter(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 3, 4, 2)
    assert set(out.metrics) == {"perplexity", "usage"}
