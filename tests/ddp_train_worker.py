"""Launched by torchrun from test_train.py: train, then save this rank's model state."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from vqkit.train import load_config
from vqkit.train.loop import Trainer

if __name__ == "__main__":
    overrides = json.loads(sys.argv[1])
    trainer = Trainer(load_config(**overrides))
    trainer.run()
    rank = dist.get_rank()
    state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    torch.save(state, Path(overrides["out"]) / f"rank{rank}.pt")
    dist.barrier()  # both ranks done before gloo is torn down
    sys.stdout.flush()
    os._exit(0)  # skip gloo's teardown: it can abort (SIGABRT) when both ranks exit at once; results are saved
