"""Priors over tokens, one class each behind one interface (:class:`Prior`): :class:`Uniform` (no
tables), :class:`Static` and :class:`Context` (fitted together as :class:`PriorTables` and saved beside
the model) and :class:`Learned` (a network per digit, integer inference, fitted on request). ``PRIORS`` maps
the names ``--prior`` takes to the classes."""

from .base import Prior, Visit, check_grid, code_length, ideal_code_length, quantized_weights
from .context import Context
from .counts import BACKOFF, DigitTable
from .learned import Learned
from .static import JOINT_MAX, Static, static_spec
from .tables import PRIOR_FILE, PriorTables, digest_of, load_prior, prior_of, save_prior
from .uniform import Uniform, uniform_name

PRIORS: dict[str, type[Prior]] = {cls.name: cls for cls in (Uniform, Static, Context, Learned)}
PRIOR_NAMES = tuple(PRIORS)
"""What ``--prior`` takes (``uniform`` writes its current version, ``uniform.v2`` for split codebooks)."""

__all__ = [
    "BACKOFF",
    "JOINT_MAX",
    "PRIORS",
    "PRIOR_FILE",
    "PRIOR_NAMES",
    "Context",
    "DigitTable",
    "Learned",
    "Prior",
    "PriorTables",
    "Static",
    "Uniform",
    "Visit",
    "check_grid",
    "code_length",
    "digest_of",
    "ideal_code_length",
    "load_prior",
    "prior_of",
    "quantized_weights",
    "save_prior",
    "static_spec",
    "uniform_name",
]
