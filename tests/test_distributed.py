"""Two gloo processes on CPU, different data per rank, DDP(broadcast_buffers=False).

Codebook statistics are all-reduced before the EMA and random restarts come from rank 0, so
the ranks must end with bit-identical codebooks, and the EMA must equal that of one process
fed both ranks' data.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vqkit.quantizers import EMAVQ, ResidualFSQ, ResidualVQ

STEPS = 6
DIM, CODES = 8, 64


def _batch(rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(2, 16, DIM, generator=g) * (1 + rank) + 3 * rank  # ranks see different data


def _exit_without_teardown() -> None:
    """End a spawned worker once every rank has saved its result and passed a barrier: gloo's teardown can
    abort the process ("terminate called without an active exception", SIGABRT) when its peer exits at the
    same moment, a race in gloo's threads, not in vqkit; the results are already on disk."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "rfsq":
        return ResidualFSQ([8, 8, 8, 5, 5, 5, 5, 5], 2, "layernorm")
    if kind == "emavq":
        q: nn.Module = EMAVQ(DIM, CODES, dead_code_threshold=1.0, kmeans_init=True, kmeans_iters=3)
    elif kind == "emavq-plain":
        q = EMAVQ(DIM, CODES)
    else:
        q = ResidualVQ(DIM, CODES, 2, dead_code_threshold=1.0)
    return nn.Sequential(nn.Linear(DIM, DIM), q)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, z: torch.Tensor) -> None:
    out = model(z)
    loss = out.quantized.square().mean() + out.loss
    opt.zero_grad()
    loss.backward()
    opt.step()


def _worker(rank: int, world: int, init_file: str, out_dir: str, kind: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = _model(kind)
        ddp = DistributedDataParallel(model, broadcast_buffers=False)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
        torch.manual_seed(100 + rank)  # rank-local RNGs differ: restarts must still agree
        seen: list[torch.Tensor] = []
        quantizer = model[-1] if isinstance(model, nn.Sequential) else model
        quantizer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
        for step in range(STEPS):
            _train_step(ddp, opt, _batch(rank, step))
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save({"state": state, "last_input": seen[-1]}, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer is still talking (SIGABRT)
        _exit_without_teardown()
    finally:
        dist.destroy_process_group()


def _run(kind: str, tmp_path: Path) -> tuple[dict, dict]:
    os.environ["OMP_NUM_THREADS"] = "1"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), kind), nprocs=2, join=True)
    return torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")


@pytest.mark.parametrize("kind", ["emavq", "rvq", "rfsq"])
def test_ranks_hold_identical_state(kind: str, tmp_path: Path) -> None:
    r0, r1 = _run(kind, tmp_path)
    s0, s1 = r0["state"], r1["state"]
    assert s0.keys() == s1.keys()
    for key in s0:
        assert torch.equal(s0[key], s1[key]), f"{kind}: '{key}' differs between ranks"
    initial = _model(kind).state_dict()
    moved = [k for k in s0 if k.endswith(("codebook", "running_mean")) and not torch.equal(s0[k], initial[k])]
    assert moved, f"{kind}: training did not change any codebook or running statistic"
    if kind == "emavq":  # dead codes of the last step were refilled from rank 0's batch only
        codebook = s0["1.codebook"]
        last0 = r0["last_input"].reshape(-1, DIM)
        last1 = r1["last_input"].reshape(-1, DIM)
        from_rank0 = (torch.cdist(codebook, last0).min(dim=1).values < 1e-5).sum().item()
        from_rank1 = (torch.cdist(codebook, last1).min(dim=1).values < 1e-5).sum().item()
        assert from_rank0 > 0, "no dead code was restarted from the batch"
        assert from_rank1 == 0


def test_ddp_ema_equals_single_process_on_both_ranks_data(tmp_path: Path) -> None:
    r0, _ = _run("emavq-plain", tmp_path)
    model = _model("emavq-plain")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(STEPS):  # equal per-rank batches: DDP's mean gradient = gradient on the union
        _train_step(model, opt, torch.cat([_batch(0, step), _batch(1, step)]))
    reference = model.state_dict()
    for key in ("1.codebook", "1.cluster_size", "1.embed_sum", "0.weight"):
        torch.testing.assert_close(r0["state"][key], reference[key], atol=1e-5, rtol=1e-5)


# -- evaluation statistics ----------------------------------------------------------------------------
_USAGE_SIZES = (8, 1 << 25)  # a dense stage and a sparse (implicit, LFQ-sized) one
_USAGE_INDICES = {  # rank -> (N, 2) indices; rank 1 uses codes rank 0 never saw
    0: [[0, 5], [1, 5], [1, 2**25 - 1]],
    1: [[6, 5], [6, 7], [7, 7], [1, 7]],
}


def _usage_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from vqkit.metrics import CodeUsage

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        usage = CodeUsage(_USAGE_SIZES)
        usage.update(torch.tensor(_USAGE_INDICES[rank]))
        usage.all_reduce()
        torch.save({"result": usage.result(), "counts": [usage.counts(s) for s in range(2)]},
                   Path(out_dir) / f"usage{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer is still talking (SIGABRT)
        _exit_without_teardown()
    finally:
        dist.destroy_process_group()


def test_code_usage_sums_counts_across_ranks(tmp_path: Path) -> None:
    from vqkit.metrics import CodeUsage

    os.environ["OMP_NUM_THREADS"] = "1"
    mp.spawn(_usage_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = CodeUsage(_USAGE_SIZES)  # one process fed both ranks' indices
    single.update(torch.tensor(_USAGE_INDICES[0] + _USAGE_INDICES[1]))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"usage{rank}.pt")
        assert got["result"] == single.result()
        assert got["result"]["usage_per_stage"][0] == pytest.approx(4 / 8)  # codes 0, 1, 6, 7
        assert [c.tolist() for c in got["counts"]] == [[3, 2, 1, 1], [3, 3, 1]]


def _tiny_tokenizer() -> nn.Module:
    from vqkit.models import Tokenizer, TokenizerConfig

    torch.manual_seed(0)
    return Tokenizer(TokenizerConfig(arch="rfsq_conv", quantizer="rfsq", conv_channels=(8, 16),
                                     quantizer_args={"levels": [8, 5, 5, 5], "num_stages": 2}))


def _images() -> torch.Tensor:
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1


def _evaluate(model: Any, batches: list[torch.Tensor], distributed: bool = False) -> dict[str, Any]:
    from vqkit.evaluate import evaluate
    from vqkit.modalities.image.scorer import ImageScorer

    return evaluate(model, batches, "cpu", ImageScorer(), distributed=distributed).metrics


def _eval_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        shard = _images()[rank::world]  # unequal halves would do too: sums, not means, are reduced
        metrics = _evaluate(_tiny_tokenizer(), [shard[:2], shard[2:]], distributed=True)
        torch.save(metrics, Path(out_dir) / f"eval{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer is still talking (SIGABRT)
        _exit_without_teardown()
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation_equals_one_process_on_all_images(tmp_path: Path) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    mp.spawn(_eval_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    images = _images()
    single = _evaluate(_tiny_tokenizer(), [images[:3], images[3:]])
    for rank in (0, 1):
        got = torch.load(tmp_path / f"eval{rank}.pt")
        assert got["images"] == 6 and got["tokens"] == single["tokens"] == 6 * 4 * 4
        for key in ("l1", "mse", "psnr", "ssim", "usage", "perplexity"):
            assert got[key] == pytest.approx(single[key], rel=1e-5), key


# -- a non-finite step under DDP ------------------------------------------------------------------------
def _nonfinite_worker(rank: int, world: int, port: int, data: str, out_dir: str) -> None:
    import json

    from vqkit.train import load_config
    from vqkit.train.loop import Trainer

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    cfg = load_config(data=data, image_size=16, batch_size=4, arch="rfsq_conv", conv_channels=(8, 16),
                      quantizer="rfsq", quantizer_args=json.dumps({"levels": [8, 5, 5, 5], "num_stages": 2}),
                      steps=5, warmup=0.0, log_every=1, eval_every=1000, ckpt_every=1000, max_val_images=4,
                      prior_images=0, out=str(Path(out_dir) / "run"))
    trainer = Trainer(cfg)

    def poison(module: nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        return output * float("nan") if module.training and rank == 1 and trainer.step == 2 else output

    trainer.model.encoder.register_forward_hook(poison)  # only rank 1's encoder output goes NaN at step 3
    try:
        summary = trainer.run()
        state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save({"state": state, "skipped": summary["nonfinite_steps"]}, Path(out_dir) / f"nf{rank}.pt")
        dist.barrier()
        _exit_without_teardown()
    finally:
        dist.destroy_process_group()


def test_a_nonfinite_step_on_one_rank_is_skipped_by_every_rank(tmp_path: Path) -> None:
    """The quantizer's NaN check would raise on rank 1 alone and strand rank 0 in a collective: under DDP
    the NaN reaches the loss instead, the skip is decided together, and the ranks stay identical."""
    import socket

    from PIL import Image

    data = tmp_path / "images"
    data.mkdir()
    rng = torch.Generator().manual_seed(0)
    for i in range(40):
        pixels = (torch.rand(20, 20, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(data / f"{i:02d}.png")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["OMP_NUM_THREADS"] = "1"
    mp.spawn(_nonfinite_worker, args=(2, port, str(data), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "nf0.pt"), torch.load(tmp_path / "nf1.pt")
    assert r0["skipped"] == r1["skipped"] == 1
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), f"'{key}' differs between ranks"
        assert torch.isfinite(r0["state"][key].float()).all(), f"'{key}' holds NaN/inf"
