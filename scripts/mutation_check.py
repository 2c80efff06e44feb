"""Plant plausible bugs, one at a time, in a copy of the repository and check that the tests catch each.

    .venv/bin/python scripts/mutation_check.py                  # every mutation: a caught/missed table
    .venv/bin/python scripts/mutation_check.py --only bound     # the mutations whose name contains "bound"
    .venv/bin/python scripts/mutation_check.py --list

src/, tests/ and pyproject.toml are copied to a temporary folder (with ``shared`` linked beside it,
where the tests look for the real data), each mutation replaces one exact snippet in one file there,
and the mutation's tests run with PYTHONPATH pointing at the copy (``pytest -x``: the first failure
is enough). "caught" means a test failed; "MISSED" means every test passed with the bug in place
("missed (equivalent)" where the entry explains why the change cannot alter any result);
"error" means pytest itself failed (collection, import) — a crash the bug causes, but not a test
catching it. Each snippet must occur exactly once in its file, so a stale entry is reported, not
silently skipped. To add one, append a :class:`Mutation` to ``MUTATIONS``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEARCH_TESTS = ("tests/test_search_bound.py", "tests/test_search_range.py", "tests/test_search.py")
SPEECH_TESTS = ("tests/test_speech_metrics.py",)
BOUND = "src/vqkit/quantizers/search_bound.py"
BF16 = "src/vqkit/quantizers/search_bf16.py"
SEARCH = "src/vqkit/quantizers/search.py"
SPEECH = "src/vqkit/metrics/speech.py"
DSP = "src/vqkit/dsp.py"


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (exactly one occurrence) by ``new`` in ``file``; ``tests`` should then fail."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    equivalent: str = ""  # why no test can catch it, for a mutation that cannot change any result


MUTATIONS: list[Mutation] = [
    # -- the bf16 search's bound (issue 19: the five an outside review planted, then more)
    Mutation("bound: threshold A instead of 2A", BOUND,
             "width = (2 * slack_t + 2 * RHO", "width = (slack_t + 2 * RHO", SEARCH_TESTS),
    Mutation("bound: F left out of A", BOUND, "return a + f, f", "return a, f", SEARCH_TESTS),
    Mutation("bound: threshold not rounded down to bf16 (helper)", BOUND,
             "low = x.to(torch.bfloat16)  # to nearest: may round up\n",
             "return x.to(torch.bfloat16)\n    low = x.to(torch.bfloat16)\n", SEARCH_TESTS),
    Mutation("bound: threshold not rounded down to bf16 (call site)", BF16,
             "low = bound.round_down_bf16(bound.threshold(best, slack))",
             "low = bound.threshold(best, slack).to(torch.bfloat16)", SEARCH_TESTS,
             equivalent="the group maxima are bf16: max >= thr iff max >= ceil_bf16(thr), so rounding thr to "
                        "nearest keeps every group that can win (only round_down_bf16's own contract changes)"),
    Mutation("bound: gamma_{D+4} -> gamma_{D/8}", BOUND, "g = gamma(d + 4)", "g = gamma(d // 8)", SEARCH_TESTS),
    Mutation("bound: 2^-17 sq split term dropped", BOUND,
             "a = a + 2.0**-17 * sq_max", "a = a + 0.0 * sq_max", SEARCH_TESTS),
    Mutation("bound: F assumes one rounding (no blocked term)", BOUND,
             "f = g * (p + 0.5 * sq_max) + tiny", "f = g * p + 2.0**-24 * (2 * p + sq_max) + tiny", SEARCH_TESTS),
    Mutation("bound: Cauchy-Schwarz cross term dropped", BOUND,
             "a = nz * dc + ndz * c_hat + ndz * dc", "a = nz * dc + ndz * c_hat", SEARCH_TESTS),
    Mutation("bound: output rounding rho left out of the threshold", BOUND,
             "width = (2 * slack_t + 2 * RHO * best.abs())", "width = (2 * slack_t + 0 * RHO * best.abs())",
             SEARCH_TESTS),
    # -- the bf16 search around the bound
    Mutation("bf16: no depth limit (D > 512 runs bf16)", BF16, "_MAX_DIM = 512 ", "_MAX_DIM = 10**6 ", SEARCH_TESTS),
    Mutation("bf16: rescore floor 2F instead of 4F", BOUND, "return top - (4 * f", "return top - (2 * f", SEARCH_TESTS),
    Mutation("bf16: rerank ties to the highest index", BF16,
             "out[rerank] = union[dist.argmin(dim=1)][rerank]",
             "out[rerank] = union[dist.shape[1] - 1 - dist.flip(1).argmin(dim=1)][rerank]", SEARCH_TESTS),
    # -- the float32 search's rescaling
    Mutation("search: tiny inputs not rescaled", SEARCH,
             "tiny = (m > 0) & (m < _TINY)", "tiny = (m > 0) & (m < 0)", SEARCH_TESTS),
    Mutation("search: tiny scale not clamped (2^138 overflows)", SEARCH,
             "(-log_m).clamp(max=126)", "(-log_m)", SEARCH_TESTS),
    Mutation("search: large inputs rescaled only above 2x the limit", SEARCH,
             "large = torch.isfinite(m) & (m > limit)", "large = torch.isfinite(m) & (m > 2**40 * limit)",
             SEARCH_TESTS),
    # -- speech metrics (issue 19's six, then more)
    Mutation("speech: PESQ reference/degraded swapped", SPEECH,
             'pesq.pesq(PESQ_RATE, r, e, "wb")', 'pesq.pesq(PESQ_RATE, e, r, "wb")', SPEECH_TESTS),
    Mutation("speech: STOI reference/degraded swapped", SPEECH,
             "pystoi.stoi(r, e, rate, extended=extended)", "pystoi.stoi(e, r, rate, extended=extended)",
             SPEECH_TESTS),
    Mutation("speech: no resampling before PESQ", SPEECH,
             "e, r = _resample(e, rate, PESQ_RATE), _resample(r, rate, PESQ_RATE)", "e, r = e, r", SPEECH_TESTS),
    Mutation("speech: STOI told 16 kHz for every rate", SPEECH,
             "pystoi.stoi(r, e, rate, extended=extended)", "pystoi.stoi(r, e, 16000, extended=extended)",
             SPEECH_TESTS),
    Mutation("speech: mel distance squared (L2) instead of L1", SPEECH,
             "return diff.abs().mean(dim=(-2, -1))", "return diff.pow(2).mean(dim=(-2, -1))", SPEECH_TESTS),
    Mutation("speech: mel distance root mean square", SPEECH,
             "return diff.abs().mean(dim=(-2, -1))", "return diff.pow(2).mean(dim=(-2, -1)).sqrt()", SPEECH_TESTS),
    Mutation("speech: log10 mels with a 1e-3 floor", DSP,
             "return torch.log(torch.clamp(torch.matmul(fb, mag), min=eps))",
             "return torch.log10(torch.clamp(torch.matmul(fb, mag), min=1e-3))", SPEECH_TESTS),
    Mutation("speech: mel floor 1e-3 (natural log kept)", DSP,
             "return torch.log(torch.clamp(torch.matmul(fb, mag), min=eps))",
             "return torch.log(torch.clamp(torch.matmul(fb, mag), min=1e-3))", SPEECH_TESTS),
    Mutation("speech: SpeechMetrics mel at 16 kHz for every rate", SPEECH,
             'v["mel_distance"].append(float(mel_distance(e, r, sr)[0]))',
             'v["mel_distance"].append(float(mel_distance(e, r, 16000)[0]))', SPEECH_TESTS),
    Mutation("speech: SI-SDR without removing the means", SPEECH,
             "e, r = e - e.mean(dim=-1, keepdim=True), r - r.mean(dim=-1, keepdim=True)", "e, r = e, r",
             SPEECH_TESTS),
    Mutation("speech: DNSMOS not resampled to 16 kHz", SPEECH,
             "np.clip(_resample(e, rate, DNSMOS_RATE), -1.0, 1.0)", "np.clip(e, -1.0, 1.0)", SPEECH_TESTS),
]


def _copy(dest: Path) -> Path:
    """src/, tests/ and pyproject.toml under dest/repo, ``shared`` linked at dest/shared; returns dest/repo."""
    repo = dest / "repo"
    repo.mkdir()
    for name in ("src", "tests"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    shared = ROOT.parent / "shared"  # tests find the real data at <repo>/../shared
    if shared.is_dir():
        (dest / "shared").symlink_to(shared.resolve(), target_is_directory=True)
    return repo


def _pytest(repo: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(repo / "src"), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    return done.returncode, lines[-1] if lines else done.stderr.strip()[-200:]


def _verdict(rc: int, mutation: Mutation) -> str:
    if rc == 0 and mutation.equivalent:
        return "missed (equivalent)"
    return {0: "MISSED", 1: "caught", -1: "timeout"}.get(rc, f"error (pytest rc {rc})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run the mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name}  [{m.file}]")
        return 0
    stale = [m.name for m in chosen if (ROOT / m.file).read_text().count(m.old) != 1]
    if stale:
        print("snippets not found exactly once (update MUTATIONS):\n  " + "\n  ".join(stale))
        return 2
    with tempfile.TemporaryDirectory(prefix="vqkit-mutants-") as tmp:
        repo = _copy(Path(tmp))
        suites = sorted({t for m in chosen for t in m.tests})
        rc, tail = _pytest(repo, tuple(suites), args.timeout)
        if rc != 0:
            print(f"the unmutated copy fails its tests ({tail}): nothing to measure")
            return 2
        rows = []
        for m in chosen:
            path = repo / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new, 1))
            start = time.monotonic()
            try:
                rc, tail = _pytest(repo, m.tests, args.timeout)
            finally:
                path.write_text(original)
            rows.append((m.name, _verdict(rc, m), time.monotonic() - start, tail))
            print(f"{rows[-1][1]:>8}  {rows[-1][2]:6.1f}s  {m.name}  ({tail})", flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n| {'mutation':<{width}} | result | seconds |\n|{'-' * (width + 2)}|---|--------:|")
    for name, verdict, seconds, _ in rows:
        print(f"| {name:<{width}} | {verdict} | {seconds:.0f} |")
    caught = sum(r[1] == "caught" for r in rows)
    equivalent = sum(r[1] == "missed (equivalent)" for r in rows)
    tail = f", {equivalent} equivalent (cannot change a result)" if equivalent else ""
    print(f"\n{caught} of {len(rows)} caught{tail}")
    for m in chosen:
        if m.equivalent:
            print(f"  equivalent: {m.name}: {m.equivalent}")
    return 0 if caught + equivalent == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
