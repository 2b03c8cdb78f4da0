"""``python -m tests.fuzz --cases 100000``: run every fuzz target for that many cases, report counts.

Options: ``--target SUBSTRING`` (repeatable) picks targets by name (``request:Produce``,
``frame-reader``, ``record-batch``, ``batch-scan``; ``--list`` names them all); ``--seed`` makes
a run repeatable; ``--engine atheris`` drives the same mutations from libFuzzer's coverage-guided
byte streams instead of ``random.Random`` (one subprocess per target: libFuzzer exits when it is
done; ~4,000 cases/s on request:Produce here, about half the random engine's 7,000, and its
coverage feedback sees the modules' own code but not the decoders codec.py compiles at run time);
``--replay HEX`` runs one input (from a finding) through the named targets' decoders.

Prints a line per target (cases, findings, seconds, the worst memory ratio seen) as it goes and a
total; every case runs even after a finding; the first finding of each kind is printed with its
input as hex, then a count per kind. Exits 1 when anything was found.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_DIGITS = re.compile(r"\d+")
_LISTS = re.compile(r"\[[^]]*\]")


def signature(finding: Any) -> str:
    """What a finding is, without its numbers: one line printed per kind and target."""
    return _DIGITS.sub("N", _LISTS.sub("[...]", finding.problem))


class FuzzedChoices:
    """atheris' FuzzedDataProvider behind the mutate.Choices calls."""

    def __init__(self, fdp: Any) -> None:
        self.fdp = fdp

    def randint(self, a: int, b: int) -> int:
        return int(self.fdp.ConsumeIntInRange(a, b))

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.randint(0, len(seq) - 1)]

    def randbytes(self, n: int) -> bytes:
        return bytes(self.fdp.ConsumeBytes(n)).ljust(n, b"\0")


def _targets(names: Sequence[str]) -> list[Any]:
    from tests.fuzz.targets import all_targets

    chosen = [t for t in all_targets() if not names or any(n in t.name for n in names)]
    if not chosen:
        sys.exit(f"no fuzz target matches {list(names)} (see --list)")
    return chosen


def run_random(names: Sequence[str], cases: int, seed: int) -> int:
    from tests.fuzz.targets import Finding

    targets = _targets(names)
    total_cases = total_findings = 0
    started = time.monotonic()
    for target in targets:
        target.warm_up()
        rnd = random.Random(f"{seed}/{target.name}")
        kinds: dict[str, int] = {}
        t0 = time.monotonic()
        for _ in range(cases):
            try:
                target.case(rnd)
            except Finding as finding:
                kind = signature(finding)
                if kind not in kinds:
                    print(f"FINDING {finding}", flush=True)
                kinds[kind] = kinds.get(kind, 0) + 1
        found = sum(kinds.values())
        total_cases += cases
        total_findings += found
        print(
            f"{target.name:40} {cases:>9,} cases {found:>5} findings {time.monotonic() - t0:7.1f} s"
            f"  worst memory ratio {target.worst_ratio:5.1f}x",
            flush=True,
        )
        for kind, count in kinds.items():
            print(f"    {count:>7,} x {kind}", flush=True)
    print(
        f"total: {len(targets)} targets, {total_cases:,} cases, {total_findings} findings, "
        f"{time.monotonic() - started:.0f} s (seed {seed})",
        flush=True,
    )
    return 1 if total_findings else 0


def run_atheris_target(name: str, cases: int) -> None:
    """In this process: libFuzzer drives one target (exits the process when done)."""
    import atheris

    with atheris.instrument_imports(include=["shardbroker"]):
        from tests.fuzz.targets import all_targets

    (target,) = [t for t in all_targets() if t.name == name]
    target.warm_up()

    def one_input(data: bytes) -> None:
        target.case(FuzzedChoices(atheris.FuzzedDataProvider(data)))

    artifacts = tempfile.mkdtemp(prefix="shardbroker-atheris-")  # libFuzzer writes crash-* there
    atheris.Setup(
        [sys.argv[0], f"-runs={cases}", "-print_final_stats=1", f"-artifact_prefix={artifacts}/"], one_input
    )
    atheris.Fuzz()


def run_atheris(names: Sequence[str], cases: int) -> int:
    found = 0
    for target in _targets(names):
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.fuzz",
                "--engine",
                "atheris",
                "--one",
                target.name,
                "--cases",
                str(cases),
            ],
            capture_output=True,
            text=True,
        )
        runs = [line for line in proc.stderr.splitlines() if "stat::number_of_executed_units" in line]
        executed = runs[-1].split(":")[-1].strip() if runs else "?"
        status = "ok" if proc.returncode == 0 else f"FINDING (exit {proc.returncode})"
        print(
            f"{target.name:40} {executed:>9} cases (atheris) {status} {time.monotonic() - t0:7.1f} s",
            flush=True,
        )
        if proc.returncode != 0:
            found += 1
            lines = proc.stderr.splitlines()
            shown = [i for i, line in enumerate(lines) if "Finding:" in line or "Error:" in line]
            for i in shown[:1] or [len(lines) - 20]:
                print("\n".join(lines[max(i - 8, 0) : i + 2]), flush=True)
            print("\n".join(line for line in lines if "Test unit written" in line), flush=True)
    return 1 if found else 0


def replay(names: Sequence[str], hex_input: str) -> int:
    from tests.fuzz.targets import Finding

    data = bytes.fromhex(hex_input)
    code = 0
    for target in _targets(names):
        target.warm_up()
        try:
            target.replay(data)
            print(f"{target.name}: no finding")
        except Finding as finding:
            print(f"FINDING {finding}")
            code = 1
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per target [10000]")
    parser.add_argument("--target", action="append", default=[], help="run targets whose name has this")
    parser.add_argument("--seed", type=int, default=0, help="random seed [0]")
    parser.add_argument("--engine", choices=("random", "atheris"), default="random")
    parser.add_argument("--replay", metavar="HEX", help="run one input through the targets")
    parser.add_argument("--list", action="store_true", help="name the targets and exit")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # an atheris child process
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    if args.list:
        for target in _targets([]):
            print(target.name)
        return 0
    if args.replay is not None:
        return replay(args.target, args.replay)
    if args.engine == "atheris":
        if args.one:
            run_atheris_target(args.one, args.cases)
            return 0
        return run_atheris(args.target, args.cases)
    return run_random(args.target, args.cases, args.seed)


if __name__ == "__main__":
    sys.exit(main())
