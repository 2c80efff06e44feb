"""What vqkit knows about one kind of signal, as one object: a :class:`Modality`. Training, evaluation, the
codec, the CLI and the reports hold one and never ask which it is; a new kind of signal is one package that
subclasses it and registers (:mod:`.registry`).

A modality owns: its signal I/O (files ⇄ signals), datasets, the codec's signal adapter, the training
objective and adversary, the :class:`Scorer` of the one evaluation loop (:mod:`vqkit.evaluate`), the
artifacts an evaluation writes, and the section of a sweep report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..codec.tiled import Codec, Encoded, SignalAdapter
from ..metrics import CodeUsage
from ..models import Tokenizer
from ..validation import Count, NonNegativeFloat, PositiveFloat, check_fields

if TYPE_CHECKING:  # the modality reads its options from the run's config; it never builds one
    from ..train.config import TrainConfig


@dataclass(frozen=True)
class CropConfig:
    """The ``crop`` section of a run's config: how training items are cut from the signals. A modality
    subclasses it with its own fields (an image side, a segment of samples); the base has none."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class ObjectiveConfig:
    """The ``objective`` section of a run's config: the loss weights every modality has. A modality
    subclasses it with its own terms; the training loop reads only these fields."""

    l1_weight: NonNegativeFloat = 1.0
    """Pixel (sample) L1 loss."""
    gan_weight: NonNegativeFloat = 0.0
    """Adversarial loss (PatchGAN for images, MPD + MRD for speech); 0 = none."""
    gan_start: Count = 0
    """Step at which the adversarial loss is switched on."""
    disc_lr: PositiveFloat = 1e-4
    """Discriminator learning rate."""

    def __post_init__(self) -> None:
        check_fields(self)


class Objective(nn.Module):
    """Reconstruction losses of one modality: ``(recon, target) -> (weighted sum, scalars to log)``."""

    notes: dict[str, str]
    """Facts for the run summary (e.g. why LPIPS is off)."""

    def forward(self, recon: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover
        raise NotImplementedError


class Adversary(nn.Module):
    """A discriminator and its losses: ``forward(fake, real, generator)`` is the generator's adversarial loss
    (``generator=True``) or the discriminator's. One forward entry point so that a
    ``DistributedDataParallel`` wrapper sees every use and keeps the ranks' discriminators in step; the
    loop owns the optimizer and decides when the adversary starts."""

    def forward(self, fake: Tensor, real: Tensor, generator: bool) -> Tensor:
        return self.generator_loss(fake, real) if generator else self.discriminator_loss(fake.detach(), real)

    def generator_loss(self, fake: Tensor, real: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def discriminator_loss(self, fake: Tensor, real: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Reconstruction:
    """One batch through a tokenizer, as a scorer sees it: targets and reconstructions (B, C, *spatial),
    cropped to the signal and clamped to [-1, 1]; the quantizer's indices; each item's stored shape."""

    target: Tensor
    recon: Tensor
    indices: Tensor
    shapes: list[tuple[int, ...]]


@dataclass
class Evaluation:
    """What the evaluation loop returns: flat metrics, the code counts behind usage, the first few
    (original, reconstruction) pairs, and per-item scores (name -> one value per item, in loader order;
    empty when ``distributed``: each rank sees only its shard)."""

    metrics: dict[str, Any]
    usage: CodeUsage
    samples: list[tuple[Tensor, Tensor]]
    per_item: dict[str, list[float]] = field(default_factory=dict)


class Scorer(ABC):
    """Per-item quality of one modality's reconstructions, accumulated over an evaluation."""

    @abstractmethod
    def reconstruct(self, model: Tokenizer, batch: Tensor, device: torch.device,
                    amp_dtype: torch.dtype | None) -> Reconstruction:
        """Run ``batch`` through ``model`` (padded to its stride and cropped back where the modality needs it)."""

    @abstractmethod
    def update(self, rec: Reconstruction) -> None:
        """Score every item of ``rec``."""

    @abstractmethod
    def result(self, model: Tokenizer, usage: CodeUsage, rates: FileRates | None) -> dict[str, Any]:
        """The flat metrics: quality means, codebook use and rates in the modality's units."""

    def per_item(self) -> dict[str, list[float]]:
        """Each item's scores, in order (for exact standard errors and paired comparisons)."""
        return {}

    def all_reduce(self) -> None:  # noqa: B027  # optional: scorers that support DDP evaluation override it
        """Sum the accumulated scores over ranks (a no-op outside ``torch.distributed``)."""


@dataclass
class FileRates:
    """Real ``.vqt`` sizes over an evaluation, per prior: total bits and the sum over items of bits per sample."""

    bits: dict[str, float] = field(default_factory=dict)
    per_sample: dict[str, float] = field(default_factory=dict)

    def add(self, bits: Mapping[str, list[float]], samples: list[int]) -> None:
        for prior, values in bits.items():
            self.bits[prior] = self.bits.get(prior, 0.0) + sum(values)
            self.per_sample[prior] = self.per_sample.get(prior, 0.0) + sum(b / n for b, n in zip(values, samples,
                                                                                                strict=True))


class Modality(ABC):
    """One kind of signal. Class attributes name it; methods give everything the rest of vqkit needs."""

    name: ClassVar[str]
    """As the ``.vqt`` header, configs and reports call it."""
    container_code: ClassVar[int]
    """The ``.vqt`` header's modality byte."""
    items: ClassVar[str]
    """What one dataset item is called in messages and metrics ('images', 'utterances')."""
    per_item_key: ClassVar[str]
    """Where ``metrics.json`` keeps per-item scores ('per_image', 'per_utterance')."""
    extensions: ClassVar[tuple[str, ...]]
    """Files ``vqkit encode`` takes for this modality (lower case)."""
    decoded_suffix: ClassVar[str]
    """The file type ``vqkit decode`` writes."""
    keep_samples: ClassVar[int] = 8
    """(original, reconstruction) pairs an evaluation keeps for its artifacts."""
    sample_unit: ClassVar[str] = "sample"
    """What one sample of the signal is called in rates ('pixel' for images: bits per pixel)."""
    train_hint: ClassVar[str] = "vqkit train --arch ARCH --data DIR --out RUN"
    """How a user gets a model of this modality (said when no such model is at hand)."""

    def samples_of(self, shape: tuple[int, ...]) -> int:
        """The signal samples a file's stored ``shape`` holds (the denominator of its rate)."""
        count = 1
        for n in shape[1:]:
            count *= n
        return count
    crop_config: ClassVar[type[CropConfig]] = CropConfig
    """The class of a run config's ``crop`` section for this modality."""
    objective_config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig
    """The class of a run config's ``objective`` section: its loss weights (options of other modalities are
    refused by name)."""

    # -- training ---------------------------------------------------------------------------
    @abstractmethod
    def datasets(self, cfg: TrainConfig) -> tuple[Dataset[Tensor], Dataset[Tensor]]:
        """(training, validation) datasets of a run."""

    @abstractmethod
    def objective(self, cfg: TrainConfig, device: torch.device, main: bool) -> Objective: ...

    @abstractmethod
    def adversary(self, cfg: TrainConfig) -> Adversary: ...

    # -- evaluation ------------------------------------------------------------------------------
    @abstractmethod
    def scorer(self, model: Tokenizer, device: torch.device, *, full: bool, objective: Objective | None = None
               ) -> Scorer:
        """A fresh scorer; ``full=False`` is training validation (cheap scores only); ``objective`` lends a
        perceptual network it already loaded."""

    @abstractmethod
    def eval_loader(self, dataset: Dataset[Tensor], batch_size: int) -> Iterable[Tensor]:
        """Batches of ``dataset`` in order, as :meth:`Scorer.reconstruct` takes them."""

    @abstractmethod
    def eval_dataset(self, cfg: TrainConfig, data: str, split: str, max_items: int) -> Dataset[Tensor]:
        """The evaluation items of ``split`` of ``data`` for a run trained with ``cfg``; a bad file stops the
        evaluation, naming it (substituting another would file its score under the bad one's id)."""

    @abstractmethod
    def eval_data(self, cfg: TrainConfig, split: str) -> str:
        """The data a run is evaluated on when ``vqkit eval`` is given no ``--data``."""

    @abstractmethod
    def eval_record(self, cfg: TrainConfig, data: str, split: str) -> dict[str, Any]:
        """What ``metrics.json`` states about the evaluation set besides the run and data."""

    @abstractmethod
    def write_artifacts(self, result: Evaluation, model: Tokenizer, out: Path) -> list[Path]:
        """Pictures (and sounds) of an evaluation beside its ``metrics.json``."""

    @abstractmethod
    def format_metrics(self, metrics: dict[str, Any]) -> str:
        """The headline numbers, two columns, for the terminal."""

    # -- codec ---------------------------------------------------------------------------------
    @abstractmethod
    def adapter(self, model: Tokenizer) -> SignalAdapter[Any]: ...

    def tile(self, model: Tokenizer) -> tuple[int, int]:
        """(tile, margin) in tokens of the codec's tiling."""
        return 64, 8

    @abstractmethod
    def training_signals(self, cfg: TrainConfig | None, data: str, max_items: int, model: Tokenizer
                         ) -> Iterable[Any]:
        """Whole training signals of ``data`` (a run's own split rules when ``cfg`` is given), to fit priors."""

    @abstractmethod
    def read(self, path: Path, codec: Codec[Any]) -> Any:
        """A file -> the signal the codec encodes."""

    @abstractmethod
    def write(self, path: Path, signal: Any, codec: Codec[Any]) -> None: ...

    @abstractmethod
    def describe(self, signal: Any, codec: Codec[Any]) -> str:
        """'768x512', '3.20 s at 16000 Hz'."""

    @abstractmethod
    def rate(self, encoded: Encoded, codec: Codec[Any]) -> str:
        """A file's rate in the modality's unit, e.g. '0.812 bpp (nominal 1.375 bpp)'."""

    @abstractmethod
    def fidelity(self, original: Any, decoded: Any, codec: Codec[Any]) -> str:
        """'PSNR 29.47 dB'."""

    # -- reports ------------------------------------------------------------------------------------
    @abstractmethod
    def write_report(self, out_dir: Path, results: dict[str, Any]) -> list[Path]:
        """``report.md`` and plots of a sweep of this modality's configurations."""
