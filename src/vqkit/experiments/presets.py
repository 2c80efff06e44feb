"""The papers' experiments as comparison presets, each at a CPU scale and at the paper's scale.

Every configuration of a preset shares the data, model, steps, seed and optimiser (the preset's
``base`` training preset); only the quantizer differs. Bits per token are computed from each
quantizer, never copied from a paper: RFSQ's "12-bit" residual runs are 22 and 40 bits per token.
``paper`` holds the numbers the paper reports for that row, for side-by-side reading only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One row of a comparison: a named quantizer configuration."""

    name: str
    family: str
    quantizer: str
    args: dict[str, Any]
    paper: dict[str, float] | None = None
    scales: tuple[str, ...] = ("cpu", "paper")
    """The scales this row runs at (a 262k codebook is a paper-scale row only)."""


@dataclass(frozen=True)
class Preset:
    """A sweep: entries trained under one base recipe (a key of ``vqkit.train.PRESETS`` per scale)."""

    name: str
    title: str
    entries: tuple[Entry, ...]
    base: dict[str, str]
    """scale ('cpu' | 'paper') -> training preset name."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """scale -> training options (``vqkit train``'s names) applied on top of the base preset."""
    entry_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    """scale -> quantizer arguments set in every row (e.g. the latent width of the paper's model)."""

    def rows(self, scale: str) -> tuple[Entry, ...]:
        """The rows that run at ``scale``, with that scale's shared quantizer arguments."""
        extra = self.entry_args.get(scale, {})
        return tuple(Entry(e.name, e.family, e.quantizer, {**e.args, **extra}, e.paper, e.scales)
                     for e in self.entries if scale in e.scales)


STRATEGIES = ("none", "scale", "layernorm")
_LABEL = {"none": "None", "scale": "Scale", "layernorm": "LayerNorm"}


def _rfsq(name: str, levels: list[int], stages: int, conditioning: str,
          paper: dict[str, float] | None = None) -> Entry:
    """An RFSQ row; ``name`` gets the strategy's label: 'RFSQ-2x2048' -> 'RFSQ-2x2048-LayerNorm'."""
    return Entry(f"{name}-{_LABEL[conditioning]}", "RFSQ", "rfsq",
                 {"levels": levels, "num_stages": stages, "conditioning": conditioning}, paper)


def _paper(l1: float, lpips: float, psnr: float) -> dict[str, float]:
    """A row of RFSQ's Table 1."""
    return {"l1": l1, "lpips": lpips, "psnr": psnr}


def _simvq_paper(util: float, rfid: float, lpips: float, psnr: float, ssim: float) -> dict[str, float]:
    """A row of SimVQ's Tables 1, 3 and 4 (SSIM printed in %)."""
    return {"usage": util, "rfid": rfid, "lpips": lpips, "psnr": psnr, "ssim": ssim / 100}


def _simvq(name: str, codebook_size: int, paper: dict[str, float], family: str = "SimVQ", **options: Any) -> Entry:
    """A SimVQ row at the paper's 128-d latents."""
    return Entry(name, family, "simvq", {"dim": 128, "codebook_size": codebook_size, **options}, paper)


RFSQ_SCALES = {"cpu": "rfsq-cpu", "paper": "rfsq-paper"}
SIMVQ_SCALES = {"cpu": "simvq-cpu", "paper": "simvq-paper"}
CPU_STEPS = {"cpu": {"steps": 300, "eval_every": 300, "ckpt_every": 50}}
SIMVQ_65K = _simvq("SimVQ 65k", 65536, _simvq_paper(1.0, 2.24, 0.12, 24.15, 78.4))
"""The same row in SimVQ's Tables 1, 3 and 4."""

PRESETS: dict[str, Preset] = {}


def _add(preset: Preset) -> None:
    PRESETS[preset.name] = preset


_add(Preset(
    "rfsq-table1", "RFSQ Table 1: the nine configurations as the paper lists them (true bits per token shown)",
    (
        Entry("VQ-EMA", "VQ-EMA", "emavq", {"dim": 6, "codebook_size": 4096}, _paper(0.355, 0.489, 12.7)),
        Entry("FSQ", "FSQ", "fsq", {"levels": [8, 8, 8, 8]}, _paper(0.143, 0.182, 20.3)),
        Entry("LFQ", "LFQ", "lfq", {"dim": 12}, _paper(0.241, 0.361, 16.0)),
        _rfsq("RFSQ-2x2048", [8, 8, 8, 4], 2, "scale", _paper(0.122, 0.152, 21.5)),
        _rfsq("RFSQ-2x2048", [8, 8, 8, 4], 2, "layernorm", _paper(0.124, 0.148, 21.3)),
        _rfsq("RFSQ-2x2048", [8, 8, 8, 4], 2, "none", _paper(0.130, 0.159, 21.1)),
        _rfsq("RFSQ-4x1024", [4, 4, 4, 4, 4], 4, "scale", _paper(0.103, 0.101, 22.9)),
        _rfsq("RFSQ-4x1024", [4, 4, 4, 4, 4], 4, "layernorm", _paper(0.102, 0.100, 22.9)),
        _rfsq("RFSQ-4x1024", [4, 4, 4, 4, 4], 4, "none", _paper(0.113, 0.121, 22.2)),
    ),
    RFSQ_SCALES, CPU_STEPS,
))

_add(Preset(
    "rfsq-equal-bits",
    "RFSQ against FSQ, LFQ and VQ-EMA at equal bits per token (12 and 22 bits): the comparison the paper did not make",
    (
        Entry("FSQ-12bit [8,8,8,8]", "FSQ", "fsq", {"levels": [8, 8, 8, 8]}),
        Entry("VQ-EMA-12bit 4096", "VQ-EMA", "emavq", {"dim": 6, "codebook_size": 4096}),
        Entry("LFQ-12bit", "LFQ", "lfq", {"dim": 12}),
        *(_rfsq("RFSQ-12bit 2x[8,8]", [8, 8], 2, c) for c in STRATEGIES),
        _rfsq("RFSQ-12bit 3x[4,4]", [4, 4], 3, "layernorm"),
        Entry("FSQ-22bit [8,8,8,8,8,8,4,4]", "FSQ", "fsq", {"levels": [8, 8, 8, 8, 8, 8, 4, 4]}),
        Entry("LFQ-22bit", "LFQ", "lfq", {"dim": 22}),  # no VQ-EMA: 4M codes cannot fill from a CPU sweep
        *(_rfsq("RFSQ-22bit 2x[8,8,8,4]", [8, 8, 8, 4], 2, c) for c in STRATEGIES),
    ),
    RFSQ_SCALES, CPU_STEPS,
))

_add(Preset(
    "simvq-table1", "SimVQ Table 1: codebook methods at ~65k codes on the VQGAN-style model",
    (
        Entry("VQGAN (VQ)", "VQ", "vq", {"dim": 128, "codebook_size": 65536},
              _simvq_paper(0.014, 3.74, 0.17, 22.20, 70.6)),
        Entry("VQGAN-EMA", "VQ-EMA", "emavq", {"dim": 128, "codebook_size": 65536},
              _simvq_paper(0.045, 3.23, 0.15, 22.89, 72.3)),
        Entry("VQGAN-FC 128-d", "VQGAN-FC", "factorized", {"dim": 128, "codebook_size": 65536, "code_dim": 128},
              _simvq_paper(0.014, 5.33, 0.18, 21.45, 68.8)),
        Entry("VQGAN-FC 8-d", "VQGAN-FC", "factorized", {"dim": 128, "codebook_size": 65536, "code_dim": 8},
              _simvq_paper(1.0, 2.63, 0.13, 23.79, 77.5)),
        Entry("FSQ [8,8,8,5,5,5]", "FSQ", "fsq", {"levels": [8, 8, 8, 5, 5, 5]},
              _simvq_paper(1.0, 2.80, 0.13, 23.63, 75.8)),
        Entry("LFQ 16 bits", "LFQ", "lfq", {"dim": 16}, _simvq_paper(1.0, 2.88, 0.13, 23.60, 77.2)),
        SIMVQ_65K,
    ),
    SIMVQ_SCALES, CPU_STEPS,
))

_add(Preset(
    "simvq-codebook-sweep", "SimVQ Tables 3-4: codebook size 1k-262k; frozen vs trainable, Gaussian vs uniform C",
    (
        _simvq("SimVQ 1k", 1024, _simvq_paper(1.0, 3.67, 0.16, 22.34, 70.8)),
        _simvq("SimVQ 8k", 8192, _simvq_paper(1.0, 2.98, 0.14, 23.23, 74.7)),
        SIMVQ_65K,
        _simvq("SimVQ 262k", 262144, _simvq_paper(1.0, 1.99, 0.11, 24.68, 80.3)),
        _simvq("SimVQ 65k trainable C", 65536, _simvq_paper(1.0, 2.31, 0.12, 24.04, 77.2), "SimVQ-trainable",
               train_codebook=True),
        _simvq("SimVQ 65k uniform C", 65536, _simvq_paper(1.0, 2.31, 0.12, 24.15, 78.4), "SimVQ-uniform",
               init="uniform"),
    ),
    SIMVQ_SCALES, CPU_STEPS,
))

_add(Preset(
    "quick", "Quick comparison at 12 bits per token on scikit-image's bundled photos (the README's main job)",
    (
        Entry("FSQ [8,8,8,8]", "FSQ", "fsq", {"levels": [8, 8, 8, 8]}),
        Entry("LFQ 12 bits", "LFQ", "lfq", {"dim": 12}),
        Entry("VQ-EMA 4096", "VQ-EMA", "emavq", {"dim": 6, "codebook_size": 4096}),
        Entry("SimVQ 4096", "SimVQ", "simvq", {"dim": 16, "codebook_size": 4096}),
        *(_rfsq("RFSQ 2x[8,8]", [8, 8], 2, c) for c in STRATEGIES),
    ),
    RFSQ_SCALES,
    {"cpu": {"steps": 150, "image_size": 32, "batch_size": 16, "conv_channels": (32, 64), "eval_every": 150,
             "ckpt_every": 50, "max_val_items": 64}},
))

_MODERN_DIM = 16
"""The latent width of the vector-codebook rows of ``modern`` (FSQ/LFQ/BSQ/grouped take theirs from their bits)."""

_add(Preset(
    "modern",
    "The quantizers recent tokenizers use, at 12 bits per token on one tokenizer, data, seed and budget",
    (
        Entry("FSQ [8,8,8,8]", "FSQ", "fsq", {"levels": [8, 8, 8, 8]}),
        Entry("LFQ 12 bits", "LFQ", "lfq", {"dim": 12, "bit_order": "msb"}),
        Entry("BSQ 12 bits", "BSQ", "bsq", {"dim": 12, "bit_order": "msb"}),
        Entry("IBQ 4096", "IBQ", "ibq", {"dim": _MODERN_DIM, "codebook_size": 4096}),
        Entry("SimVQ 4096", "SimVQ", "simvq", {"dim": _MODERN_DIM, "codebook_size": 4096}),
        Entry("VQ 4096, rotation trick", "VQ", "vq", {"dim": _MODERN_DIM, "codebook_size": 4096,
                                                      "gradient": "rotation"}),
        Entry("grouped FSQ 2x[8,8]", "grouped", "grouped", {"inner": "fsq", "groups": 2, "levels": [8, 8]}),
        # 4096 codes per token, but a pyramid of 1+4+16+64+256 = 341 tokens per 16x16 map: 1.33x the bits a position
        Entry("multi-scale RQ 4096 (1,2,4,8,16)", "MSRQ", "msrq",
              {"dim": _MODERN_DIM, "codebook_size": 4096, "patch_nums": [1, 2, 4, 8, 16]}, scales=("cpu",)),
        Entry("multi-scale RQ 4096 (VAR's scales)", "MSRQ", "msrq",
              {"dim": _MODERN_DIM, "codebook_size": 4096, "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 24, 32]},
              scales=("paper",)),
    ),
    RFSQ_SCALES, CPU_STEPS,
))


def _audio_paper(util: float, pesq: float, stoi: float) -> dict[str, float]:
    """A row of SimVQ's Table 2, LibriTTS test-other column (utilization as a fraction)."""
    return {"usage": util / 100, "pesq_wb": pesq, "stoi": stoi}


_add(Preset(
    "simvq-audio", "SimVQ Table 2 on LibriSpeech-subset-16k: VQ-EMA and FSQ against SimVQ on one speech model",
    (
        # WavTokenizer's codebook is EnCodec's: EMA 0.99, k-means initialisation, dead codes (EMA count < 2) restarted
        Entry("VQ-EMA 4096 (WavTokenizer)", "VQ-EMA", "emavq",
              {"dim": 64, "codebook_size": 4096, "kmeans_init": True, "dead_code_threshold": 2.0},
              _audio_paper(100, 2.26, 0.89)),
        Entry("FSQ [8,8,8,8] 4096", "FSQ", "fsq", {"levels": [8, 8, 8, 8], "dim": 64}),
        Entry("SimVQ 4096", "SimVQ", "simvq", {"dim": 64, "codebook_size": 4096}, _audio_paper(100, 2.08, 0.88)),
        Entry("FSQ [8,8,8,5,5,5] 64000", "FSQ", "fsq", {"levels": [8, 8, 8, 5, 5, 5], "dim": 64}),
        Entry("SimVQ 65536", "SimVQ", "simvq", {"dim": 64, "codebook_size": 65536}, _audio_paper(99.0, 2.26, 0.90)),
        Entry("SimVQ 262144", "SimVQ", "simvq", {"dim": 64, "codebook_size": 262144}, _audio_paper(94.7, 2.31, 0.90),
              scales=("paper",)),
    ),
    {"cpu": "speech-cpu", "paper": "speech-paper"},
    {"cpu": {"steps": 600, "segment": 8000, "batch_size": 8, "eval_every": 600, "ckpt_every": 100,
             "max_val_items": 100, "prior_items": 100}},
    {"paper": {"dim": 512}},
))

TOY_PRESET = "simvq-toy2d"
"""Not a training sweep: SimVQ Figs. 2-3 as plots (``vqkit.experiments.toy2d``)."""
