"""The mirror's error series: every kind the mirror counts exists at 0 from the start."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from shardbroker.mirror.mirror_metrics import ERROR_KINDS, MirrorMetrics

MIRROR = Path(__file__).resolve().parents[2] / "shardbroker" / "mirror"
#: ``metrics.error("kind")``, ``failed("kind", ...)`` (FailureLog) and ``_duty("kind", ...)``.
COUNTED = re.compile(r'(?:\.error|\.failed|_duty)\(\s*"([a-z_]+)"')


def test_every_kind_counted_in_the_mirror_is_a_known_kind() -> None:
    counted = {kind for path in MIRROR.glob("*.py") for kind in COUNTED.findall(path.read_text())}
    assert counted, "the pattern finds the calls"
    assert counted <= set(ERROR_KINDS), sorted(counted - set(ERROR_KINDS))


def test_each_known_kind_is_exported_at_zero_before_its_first_error() -> None:
    # rate() needs a sample before the first increment, or a kind's first error never shows.
    metrics = MirrorMetrics()
    text = generate_latest(metrics.registry).decode()
    for kind in ERROR_KINDS:
        assert f'shardbroker_mirror_errors_total{{kind="{kind}"}} 0.0' in text
    metrics.error("refused")
    assert 'shardbroker_mirror_errors_total{kind="refused"} 1.0' in generate_latest(metrics.registry).decode()
