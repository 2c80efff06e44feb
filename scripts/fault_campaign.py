#!/usr/bin/env python
"""The fault campaign at full size: how vqkit survives kills, corrupt files, fuzzed input and a dead DDP rank,
and whether it keeps the user's files and reads inputs faithfully.

The same campaign as ``pytest tests/faults`` (the same machinery, ``tests/faults/harness/``), with
more of everything: 24 kills, every kind of file with 8 kinds of damage plus random flips, about
3,600 fuzz cases, a 2-rank DDP job killed on each rank, foreign files in an output folder, every
lying WAV header (plus 200 random ones), multi-frame/EXIF/ICC images, and the data-safety scenarios
(decode into the input folder, overwrites, links to inputs, prior refits: data lost must be 0). Prints the
figures, then every failing case with its command and stderr, then the undetectable cases with their reason.
Exits 1 if anything failed. About 5-10 minutes on 2 CPU cores.

    .venv/bin/python scripts/fault_campaign.py                   # everything
    .venv/bin/python scripts/fault_campaign.py --parts kill,ddp --kills 30
    .venv/bin/python scripts/fault_campaign.py --json faults.json # also every record, as JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from faults import harness as h  # noqa: E402
from faults.harness.safety import SafetyResult, run_safety  # noqa: E402

PARTS = ("kill", "corrupt", "fuzz", "inputs", "safety", "ddp")


def say(text: str = "") -> None:
    print(text, flush=True)


def say_problems(problems: Sequence[str]) -> None:
    for problem in problems:
        say(f"           - {problem}")


def kill_part(args: argparse.Namespace, work: Path, server: h.CliServer) -> tuple[list[h.KillResult], float]:
    began = time.monotonic()
    plans = h.kill_plans(args.kills, args.seed, args.real_process_kills)
    runners: dict[str, h.Runner] = {"server": server}
    say(f"== kill/resume: {len(plans)} SIGKILLs of a {h.KILL_STEPS}-step tiny `vqkit train`, each then --resume'd")
    refs = {"server": h.reference_run(server, work / "ref-server")}
    say(f"   reference run (fork server): {refs['server'].seconds:.1f} s")
    if any(p.runner == "subprocess" for p in plans):
        runners["subprocess"] = h.SubprocessRunner(work / "subprocess")
        refs["subprocess"] = h.reference_run(runners["subprocess"], work / "ref-subprocess")
        say(f"   reference run (python -m vqkit.cli): {refs['subprocess'].seconds:.1f} s")
    results = []
    for i, plan in enumerate(plans):
        result = h.run_kill_trial(runners, work / "kills", plan, refs[plan.runner], i)
        results.append(result)
        state = "survived" if result.survived else "FAILED"
        say(f"   [{i + 1:2d}/{len(plans)}] {plan.label:<52} -> {result.landed}: {state} ({result.seconds:.1f} s)")
        say_problems(result.problems)
    return results, time.monotonic() - began


def corrupt_part(args: argparse.Namespace, work: Path, server: h.CliServer
                 ) -> tuple[list[h.CaseResult], list[str], float]:
    began = time.monotonic()
    kinds = h.available_kinds()
    missing = [k.name for k in h.KINDS if k not in kinds]
    damages = h.damages(full=True, random_flips=args.random_flips, seed=args.seed)
    say(f"== corrupt inputs: {len(kinds)} kinds of file x {len(damages)} kinds of damage"
        + (f" (not covered, module missing: {', '.join(missing)})" if missing else ""))
    corpus = h.build_corpus(server, work / "corpus")
    controls = [p for kind in kinds if (p := h.intact_problem(server, corpus, kind, work / "controls" / kind.slug))]
    for line in controls:
        say(f"   control FAILED: {line}")
    results = []
    for kind in kinds:
        row = [h.run_corrupt_case(server, corpus, kind, damage, work / "corrupt") for damage in damages]
        results += row
        marks = "".join({"refused": ".", "undetectable": "u", "FAILED": "F"}[r.status] for r in row)
        say(f"   {kind.name:<32} {marks}  ({kind.reader})")
    return results, controls, time.monotonic() - began


def fuzz_part(args: argparse.Namespace, work: Path, server: h.CliServer) -> tuple[list[h.FuzzResult], float]:
    began = time.monotonic()
    say("== fuzz")
    results: list[h.FuzzResult] = []
    for name, run in (
        ("config files, load_config", lambda: h.fuzz_configs_api(args.config_fuzz, work / "cfg-api", args.seed)),
        ("config files, vqkit train --config", lambda: h.fuzz_configs_cli(server, args.config_cli, work / "cfg-cli",
                                                                          args.seed)),
        ("train flags, vqkit train", lambda: h.fuzz_flags_cli(server, args.flag_fuzz, work / "flags", args.seed)),
        ("image files, read_image + encode", lambda: h.fuzz_images_api(args.image_fuzz, work / "img-api", args.seed)),
        ("image files, vqkit encode", lambda: h.fuzz_images_cli(server, args.image_cli, work / "img-cli", args.seed)),
    ):
        t = time.monotonic()
        part = run()
        results += part
        counts = h.fuzz_outcomes(part)
        say(f"   {name:<36} {len(part):5d} cases: {counts.get('refused', 0)} refused, "
            f"{counts.get('accepted', 0)} accepted, {counts.get('FAILED', 0)} not clean ({time.monotonic() - t:.0f} s)")
    return results, time.monotonic() - began


def inputs_part(args: argparse.Namespace, work: Path, server: h.CliServer) -> tuple[list[h.InputResult], float]:
    began = time.monotonic()
    cases = h.input_cases(full=True, random_wavs=args.random_wavs, seed=args.seed)
    say(f"== faithful inputs, kept outputs: {len(cases)} cases")
    results = []
    for i, case in enumerate(cases):
        result = h.run_input_case(case, work / "inputs", server, i)
        results.append(result)
        if not result.ok:
            say(f"   FAILED {case.group}: {case.label} (expected {case.expect})")
            say_problems(result.problems)
    groups = sorted({r.group for r in results})
    for group in groups:
        mine = [r for r in results if r.group == group]
        say(f"   {group:<16} {len(mine):4d} cases: {sum(r.ok for r in mine)} as documented")
    return results, time.monotonic() - began


def safety_part(work: Path, server: h.CliServer) -> tuple[list[SafetyResult], float]:
    began = time.monotonic()
    say("== data safety: command sequences in folders of the user's own files")
    results = run_safety(server, work / "safety")
    for r in results:
        say(f"   {r.name:<44} {r.clean}/{r.commands} commands clean, {len(r.lost)} files lost: "
            f"{'ok' if r.ok else 'FAILED'}")
        say_problems([*(f"lost {p}" for p in r.lost), *r.problems])
    return results, time.monotonic() - began


def ddp_part(args: argparse.Namespace, work: Path) -> tuple[h.DdpSame, list[h.DdpKill], float]:
    began = time.monotonic()
    say("== DDP: 2-rank gloo torchrun")
    same = h.ddp_identical(work / "ddp")
    say(f"   uninterrupted: ranks {'identical' if same.identical else 'DIFFER'} ({same.seconds:.0f} s)")
    say_problems(same.problems)
    kills = []
    for rank in (int(r) for r in args.ddp_kill_ranks.split(",") if r.strip()):
        result = h.ddp_kill(work / "ddp", rank=rank, bound=args.ddp_bound)
        kills.append(result)
        took = f"{result.seconds:.1f} s" if result.seconds is not None else "never"
        say(f"   rank {rank} SIGKILLed: job exit {result.rc} after {took} (bound {args.ddp_bound:.0f} s): "
            f"{'ok' if result.ok else 'FAILED'}")
        say_problems(result.problems)
    return same, kills, time.monotonic() - began


def figures(kills: Sequence[h.KillResult] | None, corrupt: Sequence[h.CaseResult] | None,
            fuzz: Sequence[h.FuzzResult] | None, ddp: tuple[h.DdpSame, list[h.DdpKill]] | None,
            inputs: Sequence[h.InputResult] | None = None, safety: Sequence[SafetyResult] | None = None
            ) -> list[str]:
    lines = []
    if kills is not None:
        lines.append(f"kills survived / tried:          {sum(r.survived for r in kills)} / {len(kills)}")
    if corrupt is not None:
        undetectable = sum(r.status == "undetectable" for r in corrupt)
        failed = sum(r.status == "FAILED" for r in corrupt)
        lines.append(f"corrupt inputs refused / tried:  {sum(r.status == 'refused' for r in corrupt)} / {len(corrupt)}"
                     f"   ({undetectable} undetectable by design, {failed} failed)")
    if fuzz is not None:
        counts = h.fuzz_outcomes(fuzz)
        lines.append(f"fuzz cases / clean errors:       {len(fuzz)} / {sum(r.clean for r in fuzz)}"
                     f"   ({counts.get('refused', 0)} documented errors, {counts.get('accepted', 0)} valid inputs "
                     f"accepted, {counts.get('FAILED', 0)} not clean)")
    if inputs is not None:
        refused = sum(r.ok and r.expect == "refused" for r in inputs)
        lines.append(f"inputs+outputs cases / clean:    {len(inputs)} / {sum(r.ok for r in inputs)}   ({refused} lies "
                     f"refused as documented, {sum(not r.ok for r in inputs)} failed; user files lost: "
                     f"{sum(r.lost for r in inputs)})")
    if safety is not None:
        lines.append(f"safety scenarios / clean:        {len(safety)} / {sum(r.ok for r in safety)}   "
                     f"({sum(r.commands for r in safety)} commands, {sum(r.clean for r in safety)} with their "
                     f"documented exit code; data lost: {sum(len(r.lost) for r in safety)})")
    if ddp is not None:
        same, ddp_kills = ddp
        parts = []
        for k in ddp_kills:
            if k.ok and k.seconds is not None:
                parts.append(f"killed rank {k.rank} -> job failed in {k.seconds:.1f} s")
            else:
                parts.append(f"killed rank {k.rank} -> {k.problems[0] if k.problems else 'FAILED'}")
        bound = ddp_kills[0].bound if ddp_kills else 0
        lines.append(f"ranks identical:                 {'yes' if same.identical else 'NO'}   (2-rank gloo DDP; "
                     f"{'; '.join(parts)}, bound {bound:.0f} s)")
    return lines


def details(kills: Sequence[h.KillResult] | None, corrupt: Sequence[h.CaseResult] | None,
            fuzz: Sequence[h.FuzzResult] | None, ddp: tuple[h.DdpSame, list[h.DdpKill]] | None,
            controls: Sequence[str]) -> list[str]:
    out: list[str] = []
    failed_kills = [r for r in kills or [] if not r.survived]
    if failed_kills:
        out.append("\nFAILED kills:")
        for r in failed_kills:
            out.append(f"  - {r.plan.label}, landed {r.landed}\n      resumed: `{r.resume_command}`")
            out += [f"      {p}" for p in r.problems]
    bad = [r for r in corrupt or [] if r.status == "FAILED"]
    if bad:
        out.append("\nFAILED corrupt inputs:")
        for r in bad:
            out.append(f"  - {r.label}  [{r.kind.reader}]\n      `{r.command}`")
            out += [f"      {p}" for p in r.problems]
            out.append(h.indent(r.excerpt, "      | "))
    if controls:
        out.append("\nHarness controls that failed (intact files not accepted):")
        out += [f"  - {c}" for c in controls]
    soft = [r for r in corrupt or [] if r.status == "undetectable"]
    if soft:
        out.append("\nUndetectable by design (accepted, not counted as refused nor as failures):")
        out += [f"  - {r.label}: {r.reason}" for r in soft]
    if any(not r.clean for r in fuzz or []):
        out.append("\nFuzz cases that were not clean (grouped):")
        out += h.describe_groups(fuzz or [])
    if ddp is not None:
        same, ddp_kills = ddp
        for k in ddp_kills:
            if not k.ok:
                out.append(f"\nFAILED DDP kill of rank {k.rank}:")
                out += [f"  - {p}" for p in k.problems]
                out.append(h.indent(k.excerpt[-800:], "      | "))
        if not same.identical:
            out.append("\nFAILED DDP identical ranks:")
            out += [f"  - {p}" for p in same.problems]
    return out


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not callable(getattr(value, f.name))}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--kills", type=int, default=24, help="SIGKILLs of a tiny training run (half forced phases)")
    parser.add_argument("--real-process-kills", type=int, default=2,
                        help="random-moment kills of a `python -m vqkit.cli` process instead of a fork-server child")
    parser.add_argument("--random-flips", type=int, default=2, help="byte flips at random positions, per kind of file")
    parser.add_argument("--config-fuzz", type=int, default=3000, help="fuzzed config files through load_config")
    parser.add_argument("--config-cli", type=int, default=60, help="fuzzed config files through `vqkit train`")
    parser.add_argument("--flag-fuzz", type=int, default=80, help="fuzzed `vqkit train` command lines")
    parser.add_argument("--image-fuzz", type=int, default=400, help="fuzzed image files through read_image + encode")
    parser.add_argument("--image-cli", type=int, default=40, help="fuzzed image files through `vqkit encode`")
    parser.add_argument("--random-wavs", type=int, default=200, help="WAVs with one random lie in their header")
    parser.add_argument("--ddp-bound", type=float, default=60.0, help="seconds a DDP job may take to fail")
    parser.add_argument("--ddp-kill-ranks", default="1,0", help="ranks to SIGKILL, one job each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where runs and cases go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", default=None, help="write every record to this JSON file")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {PARTS}")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vqkit-fault-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"fault campaign: {', '.join(parts)}; work folder {work}")
    began = time.monotonic()
    kills = corrupt = fuzz = None
    inputs: list[h.InputResult] | None = None
    safety: list[SafetyResult] | None = None
    ddp = None
    controls: list[str] = []
    timings: dict[str, float] = {}
    try:
        with h.CliServer(work / "server") as server:
            if "kill" in parts:
                kills, timings["kill"] = kill_part(args, work, server)
            if "corrupt" in parts:
                corrupt, controls, timings["corrupt"] = corrupt_part(args, work, server)
            if "fuzz" in parts:
                fuzz, timings["fuzz"] = fuzz_part(args, work, server)
            if "inputs" in parts:
                inputs, timings["inputs"] = inputs_part(args, work, server)
            if "safety" in parts:
                safety, timings["safety"] = safety_part(work, server)
        if "ddp" in parts:
            same, ddp_kills, timings["ddp"] = ddp_part(args, work)
            ddp = (same, ddp_kills)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - began
    say("")
    for line in figures(kills, corrupt, fuzz, ddp, inputs, safety):
        say(line)
    for line in details(kills, corrupt, fuzz, ddp, controls):
        say(line)
    say("\ntimings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    if args.json:
        record = {"kills": kills, "corrupt": corrupt, "fuzz": fuzz, "inputs": inputs, "safety": safety, "ddp": ddp,
                  "controls": controls, "timings": timings}
        Path(args.json).write_text(json.dumps(_jsonable(record), indent=1) + "\n")
    ok = (all(r.survived for r in kills or []) and all(r.status != "FAILED" for r in corrupt or [])
          and all(r.clean for r in fuzz or []) and all(r.ok for r in inputs or []) and not controls
          and all(r.ok for r in safety or [])
          and (ddp is None or (ddp[0].identical and all(k.ok for k in ddp[1]))))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
