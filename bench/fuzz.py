"""Coverage-guided fuzzing (atheris / libFuzzer) of every decoder and parser of outside input.

    python -m bench.fuzz --inputs 1000000            # the long run: >= 1M inputs per target
    python -m bench.fuzz --inputs 2000 --jobs 2      # a quick pass
    python -m bench.fuzz --targets envelope,spec_yaml --inputs 100000

Each target (bench/fuzz_targets.py) runs in its own child process under atheris, with the
project's modules instrumented for coverage and seeded with valid inputs. The property: any
input yields a value or the project's own error type. A foreign exception is a finding: the child
saves the input and its traceback under ``--findings`` (one file per distinct exception site) and
goes on. libFuzzer bounds time (``-timeout``, seconds per input) and memory (``-rss_limit_mb``);
crossing either ends the target as a finding too. Prints per target: inputs run, time, inputs/s,
findings; exits 1 when anything was found.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TargetResult", "main", "run_target"]

ALL_TARGETS = ("envelope", "spec_yaml", "spec_json", "gossip_delta", "gossip_payload", "vote_payload")
"""Kept in step with bench.fuzz_targets.TARGETS (a unit test pins it); importing that module here
would import the code under test before atheris can instrument it."""


@dataclass(frozen=True, slots=True)
class TargetResult:
    """What one target's run did."""

    name: str
    runs: int
    seconds: float
    findings: int
    """Distinct foreign-exception sites, plus 1 if libFuzzer stopped on a timeout, OOM or crash."""
    occurrences: int
    exit_code: int
    stop: str
    """Why libFuzzer stopped early (``timeout``, ``oom``, ``crash``), or empty."""


# -- child: one target under atheris ---------------------------------------------------------


def _child(name: str, findings: Path, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["protocols", "mesh", "bench.fuzz_targets"]):
        from bench import fuzz_targets
    target = fuzz_targets.TARGETS[name]
    findings.mkdir(parents=True, exist_ok=True)

    def test_one(data: bytes) -> None:
        try:
            target.run(data)
        except target.allowed:
            pass
        except Exception as exc:  # a finding: record it, keep fuzzing
            tb = traceback.extract_tb(exc.__traceback__)
            site = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
            key = hashlib.sha1(f"{type(exc).__name__}@{site}".encode()).hexdigest()[:12]
            stem = findings / f"{name}-{type(exc).__name__}-{key}"
            with open(findings / f"{name}.occurrences", "a") as fh:
                fh.write(f"{stem.name}\n")
            if not stem.with_suffix(".bin").exists():
                stem.with_suffix(".bin").write_bytes(data)
                stem.with_suffix(".txt").write_text(
                    "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8000:]
                )

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one)
    atheris.Fuzz()


# -- parent: run targets, report -------------------------------------------------------------


def run_target(
    name: str,
    *,
    inputs: int,
    findings: Path,
    timeout_s: int = 10,
    rss_limit_mb: int = 2048,
    max_len: int = 8192,
    seed: int = 0,
) -> TargetResult:
    """Fuzz one target for ``inputs`` inputs in a child process and summarise what it found."""
    from bench import fuzz_targets  # uninstrumented, only for the seeds

    findings.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as corpus:
        for i, data in enumerate(fuzz_targets.seeds(name)):
            Path(corpus, f"seed-{i}").write_bytes(data)
        args = [
            f"-runs={inputs}", f"-timeout={timeout_s}", f"-rss_limit_mb={rss_limit_mb}",
            f"-max_len={max_len}", f"-seed={seed}", f"-artifact_prefix={findings}/{name}-",
            "-print_final_stats=1", corpus,
        ]
        cmd = [sys.executable, "-m", "bench.fuzz", "--child", name, "--findings", str(findings), "--", *args]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=_child_env())
        seconds = time.monotonic() - started
    out = proc.stdout + proc.stderr
    done = re.search(r"Done (\d+) runs in (\d+) second", out)
    runs_line = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    runs = int(done.group(1)) if done else int(runs_line.group(1)) if runs_line else 0
    stop = ""
    interrupted = "run interrupted" in out  # SIGINT/SIGTERM from outside: not a finding
    if proc.returncode != 0:
        stop = ("interrupted" if interrupted else "timeout" if "libFuzzer: timeout" in out
                else "oom" if "out-of-memory" in out else "crash")
        (findings / f"{name}.log").write_text(out[-20000:])
    occurrences_file = findings / f"{name}.occurrences"
    lines = occurrences_file.read_text().split() if occurrences_file.exists() else []
    distinct = len(set(lines)) + (1 if stop and not interrupted else 0)
    return TargetResult(name, runs, seconds, distinct, len(lines), proc.returncode, stop)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def main(argv: list[str] | None = None) -> int:
    """Run the fuzz campaign; 0 when no target found anything."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        split = argv.index("--") if "--" in argv else len(argv)
        name, findings = argv[1], Path(argv[argv.index("--findings") + 1])
        _child(name, findings, argv[split + 1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target (default 1000000)")
    parser.add_argument("--targets", default="all", help=f"comma-separated subset of {', '.join(ALL_TARGETS)}")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once (default 1)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048, help="memory limit of a child (default 2048)")
    parser.add_argument("--findings", type=Path, default=Path("fuzz-findings"), help="where findings are saved")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer seed (0: random)")
    args = parser.parse_args(argv)
    names = list(ALL_TARGETS) if args.targets == "all" else [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(names) - set(ALL_TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(ALL_TARGETS)}")
    print(f"$ python -m bench.fuzz {' '.join(argv)}")
    print(f"fuzzing {len(names)} target(s), {args.inputs} inputs each, {args.jobs} at a time; "
          f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}", flush=True)

    def one(name: str) -> TargetResult:
        result = run_target(name, inputs=args.inputs, findings=args.findings, timeout_s=args.timeout,
                            rss_limit_mb=args.rss_limit_mb, seed=args.seed)
        print(f"  done {name}: {result.runs} inputs in {result.seconds:.0f} s, {result.findings} finding(s)", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, names))
    print()
    print(f"{'target':<16} {'inputs run':>12} {'time s':>8} {'inputs/s':>9} {'findings':>9}  stop")
    for r in results:
        rate = r.runs / r.seconds if r.seconds else 0.0
        print(f"{r.name:<16} {r.runs:>12} {r.seconds:>8.0f} {rate:>9.0f} {r.findings:>9}  {r.stop or '-'}")
    found = sum(r.findings for r in results)
    short = [r.name for r in results if r.runs < args.inputs and r.stop in ("", "interrupted")]
    if found:
        print(f"\nFINDINGS: {found}; inputs and tracebacks under {args.findings}/")
    if short:
        print(f"\nfewer inputs than asked in: {', '.join(short)}")
    return 1 if found or short else 0


if __name__ == "__main__":
    sys.exit(main())
