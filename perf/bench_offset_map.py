"""Issue 17's key map figures: the log cleaner's numpy key map (shardbroker/storage/offset_map.py)
against the plain ``dict[bytes, int]`` a Python programmer would write, building and probing the
same records, and the memory each holds per key. In-process, no broker, no IO.

    .venv/bin/python -m perf offsetmap [--runs 3] [--keys 10000000]   # progress on stderr,
                                                                      # one JSON line, medians
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf offsetmap       # tiny counts

Records: ``--keys`` records of 100 B in chunks of 40,000 (~4 MB: the cleaner reads 4 MiB at a
time), each record's key ``key-%08d`` (12 B) 20 bytes into it, offsets 0, 1, 2, ... Two cases:
``distinct`` (every record a new key: ``--keys`` keys) and ``repeated`` (``--keys`` / 10 keys,
drawn at random: ~10 versions of each, as a log where 10% of the records are live).

``numpy``: ``build``, for each chunk ``murmur3_x64_128`` over its keys (read in place from the
    chunk's bytes) then ``OffsetMapBuilder.add``, and ``build()``; ``probe``, for each chunk the
    keys hashed again and ``OffsetMap.latest`` (the cleaner's second pass). ``max_keys`` is the
    record count, so the map takes every key.
``dict``: ``DictOffsetMap``: ``build``, ``d[chunk[s : s + n]] = offset`` for every record;
    ``probe``, ``d.get(chunk[s : s + n], -1)`` for every record. The key starts, lengths and
    offsets are given to it as Python lists, made before the clock starts (a decoder would have
    made them).

Both answer the same latest offset for every record (checked after each probe, off the clock).
The figure: (dict build + probe) / (numpy build + probe) within a run (target >= 5), median and
range over ``--runs``, arms in turn (order swapped each run), with the system CPU time of each
phase (``getrusage``). Memory: numpy, ``OffsetMap.nbytes / len`` (24 B of hash and offset, the
bucket directory's share) and the peak that ``tracemalloc`` saw while building (pending rows,
the compaction's sort), from a build before the timed runs; dict, ``sys.getsizeof`` of the
dict, its keys and its values, per key (pymalloc's rounding not counted), after its first run.

Measured (2 shared cores, load average ~1.1, numpy 2.4; two default runs, 3 runs each, median
and range; ~2 minutes each):

    distinct  numpy build 1.09 s + probe 1.19 s, dict 6.35 + 4.80 s: 5.1x (4.3-5.4)
              second run: numpy 0.99 + 1.09 s, dict 5.07 + 4.43 s: 5.1x (4.2-5.1)
    repeated  numpy build 1.03 s + probe 1.02 s, dict 7.53 + 7.04 s: 6.7x (5.6-9.0)
              second run: numpy 0.99 + 0.99 s, dict 6.79 + 6.85 s: 7.4x (5.2-8.1)
    memory    numpy 27.4 / 26.1 B a key (24 + the directory), dict 106.6 / 114.9 B a key;
              the numpy build's peak 67-69 B a record

The numpy build's time swings with system time (0.2-1.1 s of it in those runs; earlier runs of
the same code saw builds of 0.7-2.5 s): this VM is slow to fault in memory that another arm just
gave back, and the build allocates ~0.7 GB for 10 M records (pending rows, the sort, the map).
The probe does not allocate much and stays within ~15 %.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from perf.sizes import pick
from shardbroker.storage.offset_map import OffsetMap, OffsetMapBuilder, murmur3_x64_128

TARGET_RATIO: Final = 5.0
RECORD_SIZE: Final = 100
KEY_AT: Final = 20  # a record's length, attributes, timestamp and offset deltas, key length come first
KEY_PREFIX: Final = b"key-"
KEY_DIGITS: Final = 8
CHUNK_RECORDS: Final = 40_000  # ~4 MB of records: the cleaner's read size (log_cleaner.py)
CASES: Final = {"distinct": 1, "repeated": 10}  # records per key
ARMS: Final = ("numpy", "dict")
Progress = Callable[[str], None]
_I64 = npt.NDArray[np.int64]


@dataclass
class Chunk:
    """Records as the cleaner sees them: a buffer and where each record's key lies in it."""

    data: bytes
    starts: _I64
    lengths: _I64
    offsets: _I64
    starts_list: list[int]
    lengths_list: list[int]
    offsets_list: list[int]


def make_chunks(records: int, records_per_key: int, seed: int = 17) -> list[Chunk]:
    """``records`` records of ``records // records_per_key`` keys (module docstring)."""
    rng = np.random.default_rng(seed)
    keys = max(records // records_per_key, 1)
    ids = rng.permutation(records) if keys == records else rng.integers(0, keys, records)
    digits = 10 ** np.arange(KEY_DIGITS - 1, -1, -1)
    chunks = []
    for first in range(0, records, CHUNK_RECORDS):
        chunk_ids = ids[first : first + CHUNK_RECORDS]
        n = chunk_ids.size
        rows = np.full((n, RECORD_SIZE), ord("v"), dtype=np.uint8)
        rows[:, KEY_AT : KEY_AT + len(KEY_PREFIX)] = np.frombuffer(KEY_PREFIX, dtype=np.uint8)
        rows[:, KEY_AT + len(KEY_PREFIX) : KEY_AT + len(KEY_PREFIX) + KEY_DIGITS] = chunk_ids[
            :, None
        ] // digits % 10 + ord("0")
        starts = np.arange(n, dtype=np.int64) * RECORD_SIZE + KEY_AT
        lengths = np.full(n, len(KEY_PREFIX) + KEY_DIGITS, dtype=np.int64)
        offsets = np.arange(first, first + n, dtype=np.int64)
        chunks.append(
            Chunk(
                rows.tobytes(), starts, lengths, offsets, starts.tolist(), lengths.tolist(), offsets.tolist()
            )
        )
    return chunks


class DictOffsetMap:
    """The plain approach: the key bytes of every record in a dict, the latest offset as value."""

    def __init__(self) -> None:
        self.latest_offsets: dict[bytes, int] = {}

    def add(self, data: bytes, starts: list[int], lengths: list[int], offsets: list[int]) -> None:
        latest = self.latest_offsets
        for s, n, offset in zip(starts, lengths, offsets, strict=True):
            latest[data[s : s + n]] = offset

    def latest(self, data: bytes, starts: list[int], lengths: list[int]) -> list[int]:
        get = self.latest_offsets.get
        return [get(data[s : s + n], -1) for s, n in zip(starts, lengths, strict=True)]

    def nbytes(self) -> int:
        """The dict, its keys and its values, by ``sys.getsizeof``."""
        latest = self.latest_offsets
        return (
            sys.getsizeof(latest) + sum(map(sys.getsizeof, latest)) + sum(map(sys.getsizeof, latest.values()))
        )


def _hashes(chunk: Chunk) -> npt.NDArray[np.uint64]:
    return murmur3_x64_128(np.frombuffer(chunk.data, dtype=np.uint8), chunk.starts, chunk.lengths)


def build_numpy(chunks: list[Chunk], max_keys: int) -> OffsetMap:
    builder = OffsetMapBuilder(max_keys)
    for chunk in chunks:
        builder.add(_hashes(chunk), chunk.offsets)
    return builder.build()


def probe_numpy(offset_map: OffsetMap, chunks: list[Chunk]) -> list[_I64]:
    return [offset_map.latest(_hashes(chunk)) for chunk in chunks]


def build_dict(chunks: list[Chunk]) -> DictOffsetMap:
    out = DictOffsetMap()
    for chunk in chunks:
        out.add(chunk.data, chunk.starts_list, chunk.lengths_list, chunk.offsets_list)
    return out


def probe_dict(offset_map: DictOffsetMap, chunks: list[Chunk]) -> list[list[int]]:
    return [offset_map.latest(chunk.data, chunk.starts_list, chunk.lengths_list) for chunk in chunks]


def _timed(
    arm: str, chunks: list[Chunk], records: int, sizes: dict[str, float]
) -> tuple[dict[str, float], _I64]:
    """Build and probe seconds of one arm and its answers; the size of the dict per key into
    ``sizes`` if it lacks it (off the clock). The map is dropped before the next arm runs."""
    gc.collect()
    started, sys_started = time.perf_counter(), _system_s()
    if arm == "numpy":
        numpy_map = build_numpy(chunks, records)
        built, sys_built = time.perf_counter(), _system_s()
        answers: list[Any] = probe_numpy(numpy_map, chunks)
        keys = len(numpy_map)
    else:
        dict_map = build_dict(chunks)
        built, sys_built = time.perf_counter(), _system_s()
        answers = probe_dict(dict_map, chunks)
        keys = len(dict_map.latest_offsets)
    done, sys_done = time.perf_counter(), _system_s()
    if arm == "dict" and "dict_bytes_per_key" not in sizes:
        sizes["dict_bytes_per_key"] = dict_map.nbytes() / keys
    times = {
        "build_s": built - started,
        "probe_s": done - built,
        "total_s": done - started,
        "build_system_s": sys_built - sys_started,
        "probe_system_s": sys_done - sys_built,
        "keys": keys,
    }
    return times, np.concatenate([np.asarray(a, dtype=np.int64) for a in answers])


def _system_s() -> float:
    """This process's system CPU time: on this VM, mostly faulting in fresh memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def numpy_memory(chunks: list[Chunk], records: int) -> dict[str, float]:
    """The numpy map's bytes per key and its build's peak per record (module docstring). Off the
    clock, before the timed runs: it also touches the memory they use (on this VM the first use
    of a gigabyte costs seconds of system time)."""
    gc.collect()
    tracemalloc.start()
    try:
        numpy_map = build_numpy(chunks, records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "numpy_bytes_per_key": numpy_map.nbytes / len(numpy_map),
        "numpy_build_peak_bytes_per_record": peak / records,
    }


def _memory_line(memory: dict[str, float]) -> str:
    numpy, peak, plain = (
        memory[k] for k in ("numpy_bytes_per_key", "numpy_build_peak_bytes_per_record", "dict_bytes_per_key")
    )
    return f"numpy {numpy:.1f} B/key (peak while building {peak:.1f} B/record), dict {plain:.1f} B/key"


def run_case(name: str, records: int, runs: int, progress: Progress) -> dict[str, Any]:
    """Every run of one case, and the memory figures (module docstring)."""
    chunks = make_chunks(records, CASES[name])
    progress(f"{name}: {records:,} records in {len(chunks)} chunks")
    memory = numpy_memory(chunks, records)
    arms: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    ratios = []
    for r in range(runs):
        answers = {}
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            times, answers[arm] = _timed(arm, chunks, records, memory)
            arms[arm].append(times)
            progress(
                f"{name} run {r + 1}/{runs} {arm}: build {times['build_s']:.2f} s, "
                f"probe {times['probe_s']:.2f} s"
            )
        if arms["numpy"][-1]["keys"] != arms["dict"][-1]["keys"]:
            raise RuntimeError(f"{name}: the numpy and dict maps hold different numbers of keys")
        if not np.array_equal(answers["numpy"], answers["dict"]) or (answers["numpy"] < 0).any():
            raise RuntimeError(f"{name}: the numpy and dict maps answered differently")
        ratios.append(arms["dict"][-1]["total_s"] / arms["numpy"][-1]["total_s"])
    progress(f"{name} memory: {_memory_line(memory)}")
    return {
        "records": records,
        "keys": int(arms["numpy"][0]["keys"]),
        "arms": arms,
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "met": statistics.median(ratios) >= TARGET_RATIO,
        "memory": memory,
    }


def run_once(records: int, runs: int, progress: Progress) -> dict[str, Any]:
    return {name: run_case(name, records, runs, progress) for name in CASES}


def test_offset_map_figures_quick() -> None:
    """Both maps give every record its key's latest offset (timings not judged)."""
    result = run_once(pick(200_000, 50_000), 1, lambda _: None)
    assert result["distinct"]["keys"] == result["distinct"]["records"]
    assert result["repeated"]["keys"] <= result["repeated"]["records"] // CASES["repeated"]
    for case in result.values():
        assert case["ratio"] > 0
        assert case["memory"]["numpy_bytes_per_key"] >= 24


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf offsetmap",
        description="The cleaner's numpy key map vs a dict map: build, probe, memory per key.",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs, each over both arms and cases [3]")
    keys = pick(10_000_000, 50_000)
    parser.add_argument("--keys", type=int, default=keys, help=f"records of each case [{keys:,}]")
    args = parser.parse_args(argv)
    if min(args.runs, args.keys) < 1:
        parser.error("--runs and --keys must be at least 1")
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[offsetmap {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    result = run_once(args.keys, args.runs, progress)
    print(json.dumps(result), flush=True)
    for name, case in result.items():
        print(f"{name}: {case['records']:,} records, {case['keys']:,} keys")
        for arm in ARMS:
            for phase in ("build", "probe"):
                took = [r[f"{phase}_s"] for r in case["arms"][arm]]
                system = [r[f"{phase}_system_s"] for r in case["arms"][arm]]
                print(
                    f"  {arm:5s} {phase:5s} median {statistics.median(took):6.2f} s "
                    f"({min(took):.2f}-{max(took):.2f}), system time {statistics.median(system):.2f} s "
                    f"({min(system):.2f}-{max(system):.2f})"
                )
        ratios = case["ratios"]
        print(
            f"  dict / numpy, build + probe: {case['ratio']:.1f}x "
            f"({min(ratios):.1f}-{max(ratios):.1f}, target >= {TARGET_RATIO:.0f})"
        )
        print(f"  memory: {_memory_line(case['memory'])}")
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
