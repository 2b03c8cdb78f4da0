"""The log cleaner's key map: the hash against mmh3, the builder and the map against a dict."""

from __future__ import annotations

import mmh3
import numpy as np
import numpy.typing as npt
import pytest

from shardbroker.storage import offset_map
from shardbroker.storage.offset_map import (
    BYTES_PER_KEY,
    LONG_KEY_BYTES,
    OffsetMap,
    OffsetMapBuilder,
    max_keys_for,
    murmur3_x64_128,
)

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
LOW64 = (1 << 64) - 1


def reference(data: npt.NDArray[np.uint8], starts: I64, lengths: I64, seed: int = 0) -> U64:
    out = np.empty((starts.size, 2), dtype=np.uint64)
    raw = data.tobytes()
    for i, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist(), strict=True)):
        h = mmh3.hash128(raw[s : s + n], seed, x64arch=True, signed=False)
        out[i] = h & LOW64, h >> 64
    return out


def laid_out(rng: np.random.Generator, lengths: I64) -> tuple[npt.NDArray[np.uint8], I64]:
    """Random bytes holding keys of ``lengths`` in a random order, with gaps of 0-20 bytes; the
    last key ends at the buffer's end (its tail words read past it)."""
    order = rng.permutation(lengths.size)
    gaps = rng.integers(0, 21, lengths.size)
    ends = np.cumsum(lengths[order] + gaps[order])
    starts = np.empty(lengths.size, dtype=np.int64)
    starts[order] = ends - lengths[order]
    data = rng.integers(0, 256, int(ends[-1]), dtype=np.uint8)
    return data, starts


@pytest.mark.parametrize("seed", [0, 0x9747B28C])
@pytest.mark.parametrize("long_key_bytes", [LONG_KEY_BYTES, 1 << 20])  # 1 MiB: all through numpy
def test_hash_matches_mmh3_for_every_length_to_200(
    monkeypatch: pytest.MonkeyPatch, seed: int, long_key_bytes: int
) -> None:
    monkeypatch.setattr(offset_map, "LONG_KEY_BYTES", long_key_bytes)
    rng = np.random.default_rng(seed)
    lengths = np.repeat(np.arange(201, dtype=np.int64), 3)  # 0-length keys too
    data, starts = laid_out(rng, lengths)
    got = murmur3_x64_128(data, starts, lengths, seed)
    assert got.shape == (lengths.size, 2) and got.dtype == np.uint64
    np.testing.assert_array_equal(got, reference(data, starts, lengths, seed))


def test_hash_of_mixed_keys_anywhere_in_a_buffer() -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, 20_000, dtype=np.uint8)
    lengths = rng.integers(0, 300, 4000).astype(np.int64)
    starts = rng.integers(0, data.size - lengths + 1)  # overlapping keys, some at the very end
    lengths[:3], starts[:3] = (0, 5, 17), (data.size, data.size - 5, data.size - 17)
    np.testing.assert_array_equal(murmur3_x64_128(data, starts, lengths), reference(data, starts, lengths))


@pytest.mark.parametrize("length", [0, 8, 12, 16, 31])
def test_hash_of_keys_of_one_length(length: int) -> None:
    rng = np.random.default_rng(length)
    lengths = np.full(3000, length, dtype=np.int64)
    data, starts = laid_out(rng, lengths)
    np.testing.assert_array_equal(murmur3_x64_128(data, starts, lengths), reference(data, starts, lengths))


def test_hash_of_a_mib_key_among_short_ones() -> None:
    rng = np.random.default_rng(3)
    lengths = np.array([12, 1 << 20, 0, 40], dtype=np.int64)
    data, starts = laid_out(rng, lengths)
    np.testing.assert_array_equal(murmur3_x64_128(data, starts, lengths), reference(data, starts, lengths))


def test_hash_input_checks() -> None:
    data = np.zeros(10, dtype=np.uint8)
    assert murmur3_x64_128(data, [], []).shape == (0, 2)
    for starts, lengths in (([8], [3]), ([-1], [1]), ([0], [-1])):
        with pytest.raises(ValueError, match="outside"):
            murmur3_x64_128(data, starts, lengths)
    with pytest.raises(ValueError, match="seed"):
        murmur3_x64_128(data, [0], [1], seed=1 << 32)
    with pytest.raises(ValueError, match="1-D"):
        murmur3_x64_128(data.astype(np.int8), [0], [1])


def key_pool(rng: np.random.Generator, n: int, high_words: int | None = None) -> U64:
    """``n`` distinct hashes; with ``high_words``, their high words drawn from that many values
    (keys that share a high word)."""
    pool = np.empty((n, 2), dtype=np.uint64)
    pool[:, 0] = rng.choice(1 << 62, size=n, replace=False).astype(np.uint64) * np.uint64(3)
    if high_words is None:
        pool[:, 1] = rng.integers(0, 1 << 64, n, dtype=np.uint64)
    else:
        pool[:, 1] = rng.integers(0, 1 << 64, high_words, dtype=np.uint64)[rng.integers(0, high_words, n)]
    return pool


def check_against_model(
    rng: np.random.Generator, pool: U64, max_keys: int, chunks: int, chunk_size: int
) -> OffsetMap:
    """Feed random chunks of the pool's keys; every answer of the builder and of its map must be
    what a dict of key -> latest offset, filled record by record until a new key would not fit,
    says."""
    builder, model, offset = OffsetMapBuilder(max_keys), dict[int, int](), 0
    for _ in range(chunks):
        n = int(rng.integers(0, chunk_size + 1))
        ids = rng.integers(0, pool.shape[0], n)
        offsets = offset + np.cumsum(rng.integers(1, 4, n)).astype(np.int64)
        taken = 0
        for i, o in zip(ids.tolist(), offsets.tolist(), strict=True):
            if i not in model and len(model) == max_keys:
                break
            model[i] = o
            taken += 1
        assert builder.add(pool[ids], offsets) == taken
        assert builder.distinct == len(model)
        if taken:
            assert builder.last_offset == offsets[taken - 1]
        offset = int(offsets[-1]) if n else offset
    built = builder.build()
    expected = [model.get(i, -1) for i in range(pool.shape[0])]
    assert built.latest(pool).tolist() == expected
    assert len(built) == len(model)
    assert built.max_offset == max(model.values(), default=-1)
    return built


def test_latest_offset_wins() -> None:
    rng = np.random.default_rng(1)
    check_against_model(rng, key_pool(rng, 500), max_keys=10_000, chunks=30, chunk_size=400)


def test_records_are_taken_while_the_keys_fit() -> None:
    rng = np.random.default_rng(2)
    for max_keys in (1, 7, 100, 200):
        built = check_against_model(rng, key_pool(rng, 300), max_keys, chunks=20, chunk_size=60)
        assert len(built) == max_keys  # full: later records of known keys still taken


def test_compactions_merge_updates_and_new_keys() -> None:
    rng = np.random.default_rng(3)  # chunks of up to 60 against 200 keys: compacts every few
    check_against_model(rng, key_pool(rng, 150), max_keys=200, chunks=60, chunk_size=60)


def test_keys_sharing_their_high_word() -> None:
    rng = np.random.default_rng(4)
    pool = key_pool(rng, 400, high_words=3)
    built = check_against_model(rng, pool, max_keys=350, chunks=40, chunk_size=50)
    others = key_pool(rng, 400, high_words=3)  # same three high words, other low words
    absent = ~np.isin(others[:, 0], pool[:, 0])
    assert (built.latest(others)[absent] == -1).all()


def test_keys_at_both_ends_of_the_hash_range() -> None:
    rng = np.random.default_rng(10)
    pool = key_pool(rng, 300)
    pool[:100, 1] = rng.choice(np.array([0, 1, LOW64 - 1, LOW64], dtype=np.uint64), 100)
    check_against_model(rng, pool, max_keys=250, chunks=40, chunk_size=40)


def test_a_key_above_every_other_in_a_map_of_several_buckets() -> None:
    rng = np.random.default_rng(11)
    pool = key_pool(rng, 41)
    pool[:40, 1] = rng.integers(0, 15 << 60, 40, dtype=np.uint64)  # the top bucket of 16 empty
    pool[40, 1] = LOW64
    builder = OffsetMapBuilder(100)
    builder.add(pool[:40], np.arange(40, dtype=np.int64))
    assert builder.distinct == 40
    assert builder.add(pool[38:], np.arange(40, 43, dtype=np.int64)) == 3
    assert builder.distinct == 41  # merged into the sorted rows past the last one
    assert builder.build().latest(pool).tolist() == [*range(38), 40, 41, 42]


def test_absent_keys_and_the_empty_map() -> None:
    rng = np.random.default_rng(5)
    pool = key_pool(rng, 2000)
    builder = OffsetMapBuilder(5000)
    builder.add(pool[:1000], np.arange(1000, dtype=np.int64))
    built = builder.build()
    assert (built.latest(pool[1000:]) == -1).all()
    assert built.latest(pool[:0]).shape == (0,)
    empty = OffsetMapBuilder(1).build()
    assert len(empty) == 0 and empty.max_offset == -1
    assert (empty.latest(pool[:5]) == -1).all()


def test_map_of_hashed_byte_keys() -> None:
    rng = np.random.default_rng(6)
    keys = [b"key-%d" % i for i in rng.integers(0, 3000, 20_000).tolist()] + [b""]
    data = np.frombuffer(b"".join(keys), dtype=np.uint8)
    lengths = np.array([len(k) for k in keys], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    builder, model = OffsetMapBuilder(len(keys)), dict[bytes, int]()
    for s in range(0, len(keys), 4096):
        hashes = murmur3_x64_128(data, starts[s : s + 4096], lengths[s : s + 4096])
        assert builder.add(hashes, np.arange(s, s + hashes.shape[0], dtype=np.int64)) == hashes.shape[0]
        model.update((k, s + i) for i, k in enumerate(keys[s : s + 4096]))
    latest = builder.build().latest(murmur3_x64_128(data, starts, lengths))
    assert latest.tolist() == [model[k] for k in keys]


def test_size() -> None:
    rng = np.random.default_rng(8)
    builder = OffsetMapBuilder(100_000)
    builder.add(key_pool(rng, 100_000), np.arange(100_000, dtype=np.int64))
    built = builder.build()
    assert len(built) == 100_000
    assert BYTES_PER_KEY * len(built) < built.nbytes <= (BYTES_PER_KEY + 4) * len(built)


def test_builder_input_checks() -> None:
    pool = key_pool(np.random.default_rng(9), 4)
    builder = OffsetMapBuilder(10)
    with pytest.raises(ValueError, match="increase"):
        builder.add(pool, np.array([1, 2, 2, 3], dtype=np.int64))
    assert builder.add(pool[:2], np.array([5, 6], dtype=np.int64)) == 2
    with pytest.raises(ValueError, match="increase"):
        builder.add(pool[2:], np.array([6, 7], dtype=np.int64))
    with pytest.raises(ValueError, match="offsets for"):
        builder.add(pool[2:], np.array([7], dtype=np.int64))
    with pytest.raises(ValueError, match="uint64"):
        builder.add(pool[2:, :1], np.array([7], dtype=np.int64))
    builder.build()
    with pytest.raises(RuntimeError, match="after build"):
        builder.add(pool[2:], np.array([7, 8], dtype=np.int64))
    with pytest.raises(ValueError, match="max_keys"):
        OffsetMapBuilder(0)


def test_max_keys_by_kafkas_rule() -> None:
    assert max_keys_for(128 * 1024 * 1024, 0.9, 1) == 5_033_164  # Kafka's defaults
    assert max_keys_for(128 * 1024 * 1024, 0.9, 2) == int((64 * 1024 * 1024 // 24) * 0.9)
    assert max_keys_for(8 << 30, 1.0, 1) == (2**31 - 1) // 24  # 2 GiB - 1 a thread at most
    assert max_keys_for(1000, 0.5, 1) == 20
    for args in ((1 << 20, 0.9, 0), (1 << 20, 1.5, 1), (-1, 0.9, 1)):
        with pytest.raises(ValueError):
            max_keys_for(*args)


def test_holds_says_which_offsets_are_some_keys_latest() -> None:
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 50, size=400)
    hashes = np.stack([keys.astype(np.uint64), (keys * 7 + 1).astype(np.uint64)], axis=1)
    builder = OffsetMapBuilder(100)
    assert builder.add(hashes, np.arange(400, dtype=np.int64)) == 400
    offset_map = builder.build()
    last = {int(k): i for i, k in enumerate(keys.tolist())}
    probe = np.arange(-5, 410, dtype=np.int64)
    assert offset_map.holds(probe).tolist() == [int(o) in set(last.values()) for o in probe.tolist()]
    assert OffsetMapBuilder(1).build().holds(probe).tolist() == [False] * probe.size
