"""Shared machinery of the fault campaign, so that ``tests/faults`` (small) and ``scripts/fault_campaign.py``
(full size) run the same campaign. Each part returns result records and never raises on a vqkit failure:
the tests assert on the records, the script counts them.

- :mod:`.process`: running vqkit commands (fork server :class:`CliServer`, or :class:`SubprocessRunner`);
- :mod:`.checks`: what a documented refusal looks like (exit code, one error line, no traceback);
- :mod:`.runs`: the tiny training run, its data and the reference a resumed run must match;
- :mod:`.kills`: SIGKILL at a chosen moment, ``--resume``, compare (:func:`run_kill_trial`);
- :mod:`.corpus`, :mod:`.corrupt`, :mod:`.kinds`: every file kind vqkit reads, damaged (:func:`run_corrupt_case`);
- :mod:`.oracle`, :mod:`.fuzz`, :mod:`.fuzz_config`, :mod:`.fuzz_images`: hypothesis-fuzzed configs,
  flags and images against an independent validity oracle;
- :mod:`.ddp`: a 2-rank gloo job with a rank killed (:func:`ddp_kill`) or not (:func:`ddp_identical`);
- :mod:`.inputs`, :mod:`.media`: foreign files in an output folder, lying WAV headers, multi-frame, EXIF and
  ICC images (:func:`run_input_case`).
"""

from .checks import indent
from .corpus import Corpus, build_corpus, have
from .corrupt import QUICK_DAMAGES, CaseResult, Damage, Kind, damages, intact_problem, run_corrupt_case
from .ddp import DdpKill, DdpSame, ddp_identical, ddp_kill
from .fuzz import FuzzResult, describe_groups, fuzz_outcomes
from .fuzz_config import fuzz_configs_api, fuzz_configs_cli, fuzz_flags_cli
from .fuzz_images import fuzz_images_api, fuzz_images_cli
from .inputs import InputCase, InputResult, input_cases, run_input_case
from .kills import KillPlan, KillResult, kill_plans, run_kill_trial
from .kinds import KINDS, available_kinds
from .process import CliServer, Runner, SubprocessRunner
from .runs import KILL_STEPS, Reference, reference_run

__all__ = [
    "KILL_STEPS", "KINDS", "QUICK_DAMAGES", "CaseResult", "CliServer", "Corpus", "Damage", "DdpKill", "DdpSame",
    "FuzzResult", "InputCase", "InputResult", "KillPlan", "KillResult", "Kind", "Reference", "Runner",
    "SubprocessRunner", "available_kinds", "build_corpus", "damages", "ddp_identical", "ddp_kill", "describe_groups",
    "fuzz_configs_api", "fuzz_configs_cli", "fuzz_flags_cli", "fuzz_images_api", "fuzz_images_cli", "fuzz_outcomes",
    "have", "indent", "input_cases", "intact_problem", "kill_plans", "reference_run", "run_corrupt_case",
    "run_input_case", "run_kill_trial",
]
