"""The fitted priors of one model, stored together beside it as ``prior.safetensors``.

The file holds integer arrays only (safetensors: no pickle) and, in its metadata, the stages' specs, the
coding constants and the SHA-256 of the arrays' contents (safetensors has no checksum: a flipped count
would otherwise load silently). The digest of the contents (not of one serialization of them) enters the
model id of every token file, so a file is never decoded with other tables than those that coded it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import safetensors.numpy

from ...storage import atomic_write
from ..symbols import NBR_BUCKETS, StageSpec
from .base import Prior, check_grid
from .context import Context
from .counts import BACKOFF
from .learned import EXP_ONE, FH, FL, FW, HIDDEN, HIDDEN_CAP, LOGIT_SPAN, Learned
from .static import JOINT_MAX, Static
from .uniform import Uniform

PRIOR_FILE = "prior.safetensors"
PRIOR_FORMAT = "vqkit.prior.v1"
LEARNED_CONSTANTS = {"fw": FW, "fh": FH, "fl": FL, "hidden": HIDDEN, "logit_span": LOGIT_SPAN,
                     "hidden_cap": HIDDEN_CAP, "exp_one": EXP_ONE}


class PriorTables:
    """The static and context priors fitted on one model's training tokens (``specs``: one per stage), and the
    learned prior where one was fitted (FSQ/LFQ digits only)."""

    def __init__(self, static: Static, context: Context, learned: Learned | None = None) -> None:
        if static.specs != context.specs or (learned is not None and learned.specs != static.specs):
            raise ValueError("PriorTables: priors of different quantizers")
        self.specs, self.static, self.context, self.learned = static.specs, static, context, learned

    @classmethod
    def fit(cls, specs: Sequence[StageSpec], grids: Sequence[np.ndarray],
            embeddings: Sequence[np.ndarray | None] | None = None, learned: bool = False) -> PriorTables:
        """Count the symbols of token grids (S, *positions) of a training set; ``embeddings`` as in
        :meth:`Context.fit`; ``learned``: also train the learned prior (every stage ordinal)."""
        grids = [np.asarray(g, dtype=np.int64) for g in grids]
        if not grids:
            raise ValueError("PriorTables.fit: no token grids to count")
        for g in grids:
            check_grid(g, specs)
        if learned and not all(spec.ordinal for spec in specs):
            raise ValueError("the learned prior models FSQ/LFQ/BSQ digits; this quantizer's tokens are nominal")
        return cls(Static.fit(specs, grids), Context.fit(specs, grids, embeddings),
                   Learned.fit(specs, grids) if learned else None)

    def prior(self, name: str) -> Prior:
        """The prior called ``name``: uniform (needs no tables), static, context or learned."""
        return prior_of(name, self.specs, self)

    # -- arrays, digest and bytes ---------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, np.ndarray], str]:
        """(integer arrays, JSON metadata) for safetensors."""
        arrays: dict[str, np.ndarray] = {}
        self.static.to_arrays(arrays)
        self.context.to_arrays(arrays)
        info: dict[str, object] = {"specs": [spec.to_json() for spec in self.specs], "backoff": BACKOFF,
                                   "joint_max": JOINT_MAX, "nbr_buckets": NBR_BUCKETS}
        if self.learned is not None:  # absent otherwise: tables without it keep their digest
            self.learned.to_arrays(arrays)
            info["learned"] = LEARNED_CONSTANTS
        return arrays, json.dumps(info, sort_keys=True)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: str) -> PriorTables:
        """Inverse of :meth:`to_arrays`; every table is checked against the specs (ValueError)."""
        info = json.loads(meta)
        if info.get("backoff") != BACKOFF or info.get("joint_max") != JOINT_MAX or \
                info.get("nbr_buckets") != NBR_BUCKETS:
            raise ValueError("prior tables were fitted with other coding constants than this vqkit uses")
        specs = [StageSpec.from_json(d) for d in info["specs"]]
        learned = None
        if "learned" in info or any(k.startswith("learned.") for k in arrays):
            if info.get("learned") != LEARNED_CONSTANTS:
                raise ValueError("the learned prior was fitted with other fixed-point constants than this vqkit uses")
            learned = Learned.from_arrays(specs, arrays)
        return cls(Static.from_arrays(specs, arrays), Context.from_arrays(specs, arrays), learned)

    def digest(self) -> str:
        """SHA-256 of the tables' contents and metadata (what the model id holds)."""
        arrays, meta = self.to_arrays()
        return hashlib.sha256((meta + _arrays_digest(arrays)).encode()).hexdigest()

    def to_bytes(self) -> bytes:
        arrays, meta = self.to_arrays()
        return safetensors.numpy.save(arrays, metadata={"format": PRIOR_FORMAT, "prior": meta,
                                                        "sha256": _arrays_digest(arrays)})

    @classmethod
    def from_bytes(cls, blob: bytes, where: str | os.PathLike[str] = PRIOR_FILE) -> PriorTables:
        """Parse and verify ``blob``; ValueError naming ``where`` if damaged or not prior tables."""
        try:
            arrays = safetensors.numpy.load(blob)
            (header_len,) = struct.unpack("<Q", blob[:8])  # safetensors: u64 length, JSON header, data
            meta = json.loads(blob[8 : 8 + header_len]).get("__metadata__") or {}
        except Exception as err:  # SafetensorError or anything a damaged header provokes
            raise ValueError(f"{where}: corrupt or truncated prior tables ({err})") from err
        if meta.get("format") != PRIOR_FORMAT:
            raise ValueError(f"{where}: not vqkit prior tables (format {meta.get('format')!r})")
        if meta.get("sha256") != _arrays_digest(arrays):
            raise ValueError(f"{where}: contents differ from their recorded SHA-256: the file is corrupt")
        try:
            return cls.from_arrays(arrays, meta.get("prior", "{}"))
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: invalid prior tables: {err}") from err


def prior_of(name: str, specs: Sequence[StageSpec], tables: PriorTables | None) -> Prior:
    """The prior ``name`` for a model of ``specs`` with ``tables`` (None: only ``uniform`` exists)."""
    if name in (Uniform.name, "uniform.v2"):
        return Uniform(specs, valid_top=name == "uniform.v2")
    known = (Uniform.name, "uniform.v2", Static.name, Context.name, Learned.name)
    if name not in known:
        raise ValueError(f"unknown prior {name!r}; known: {known}")
    if tables is None:
        raise ValueError(f"the {name} prior needs fitted tables ({PRIOR_FILE}): use --prior uniform, "
                         "or fit them with `vqkit fit-prior RUN_DIR --data DIR`")
    if name == Learned.name:
        if tables.learned is None:
            raise ValueError("this model's prior tables have no learned prior: fit one with "
                             "`vqkit fit-prior RUN_DIR --data DIR --learned` (FSQ/LFQ/BSQ tokenizers)")
        return tables.learned
    return tables.static if name == Static.name else tables.context


def digest_of(tables: PriorTables | None) -> str:
    """:meth:`PriorTables.digest`, or '' for a model without tables."""
    return "" if tables is None else tables.digest()


def save_prior(directory: str | os.PathLike[str], tables: PriorTables) -> Path:
    """Write ``tables`` to ``directory/prior.safetensors`` atomically; returns the path."""
    path = Path(directory) / PRIOR_FILE
    atomic_write(path, tables.to_bytes())
    return path


def load_prior(directory: str | os.PathLike[str], specs: Sequence[StageSpec]) -> PriorTables | None:
    """The tables beside a model (None if it has none); ValueError if damaged or fitted for another quantizer."""
    path = Path(directory) / PRIOR_FILE
    if not path.is_file():
        return None
    tables = PriorTables.from_bytes(path.read_bytes(), path)
    if list(tables.specs) != list(specs):
        raise ValueError(f"{path}: prior tables were fitted for another quantizer ({tables.specs} vs {tuple(specs)})")
    return tables


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode() + str(arrays[key].dtype).encode() + str(arrays[key].shape).encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()
