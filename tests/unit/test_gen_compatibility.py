"""tools/gen_compatibility.py: the committed docs/compatibility.md is what the handlers and the
tests' kafka_api markers generate, every advertised API has a marked test, and a marker the tool
cannot read or that names an API no handler serves fails with its file and line."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import pytest

from shardbroker.broker.dispatch import discover

REPO = Path(__file__).resolve().parents[2]


sys.path.insert(0, str(REPO / "tools"))
import gen_compatibility as gen  # noqa: E402  (tools/ is not a package)

SERVED = {"Produce": (0, 3, 11), "Metadata": (3, 0, 12), "OffsetDelete": (47, 0, 0)}


def test_committed_table_is_what_the_tests_generate() -> None:
    try:
        fresh = gen.render(gen.collect(REPO / "tests", REPO), gen.served_apis())
    except gen.MarkerError as exc:
        pytest.fail(f"tools/gen_compatibility.py refuses the tests' markers: {exc}", pytrace=False)
    committed = (REPO / "docs" / "compatibility.md").read_text(encoding="utf-8")
    if fresh != committed:
        diff = difflib.unified_diff(
            committed.splitlines(True), fresh.splitlines(True), "committed", "generated"
        )
        pytest.fail(
            "docs/compatibility.md differs; run python tools/gen_compatibility.py:\n"
            + "".join(list(diff)[:40]),
            pytrace=False,
        )


def test_every_advertised_api_has_a_row_with_a_test() -> None:
    text = (REPO / "docs" / "compatibility.md").read_text(encoding="utf-8")
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines()[2:] if line.startswith("| ")}
    rows.pop("API")  # the header
    served = gen.served_apis()
    assert {key for key, _, _ in served.values()} == set(discover().versions)  # ApiVersions' list
    assert set(rows) == set(served)
    for name, (key, lo, hi) in served.items():
        assert f"| {name} | {key} | {lo if lo == hi else f'{lo}-{hi}'} |" in rows[name]
        assert "](../tests/" in rows[name], f"{name}: no test linked"


def write(tmp_path: Path, name: str, source: str) -> Path:
    tests = tmp_path / "tests"
    tests.mkdir(exist_ok=True)
    (tests / name).write_text(source)
    return tests


def test_markers_on_functions_classes_and_pytestmark(tmp_path: Path) -> None:
    tests = write(
        tmp_path,
        "test_a.py",
        """
import pytest
pytestmark = [pytest.mark.integration, pytest.mark.kafka_api("Metadata", client="kcat")]

@pytest.mark.kafka_api("Produce", client=("kafka-python", "confluent-kafka"))
def test_one(): ...

@pytest.mark.kafka_api("OffsetDelete", client="shardbroker")
class TestGroup:
    async def test_two(self): ...

def helper(): ...
""",
    )
    found = gen.collect(tests, tmp_path)
    assert gen.Evidence("Produce", "kafka-python", "tests/test_a.py", "test_one") in found
    assert gen.Evidence("OffsetDelete", "shardbroker", "tests/test_a.py", "TestGroup::test_two") in found
    assert {e.test for e in found if e.api == "Metadata"} == {"test_one", "TestGroup::test_two"}
    table = gen.render(found, SERVED)
    assert (
        "| Produce | 0 | 3-11 | confluent-kafka, kafka-python | confluent-kafka: [test_a.py::test_one]"
        in table
    )
    assert "| OffsetDelete | 47 | 0 | shardbroker |" in table


def test_module_level_tuples_name_apis_and_clients(tmp_path: Path) -> None:
    tests = write(
        tmp_path,
        "test_b.py",
        """
import pytest
GROUP = ("Produce", "Metadata")
PYTHONS = ["kafka-python", "aiokafka"]

@pytest.mark.kafka_api(*GROUP, "OffsetDelete", client=PYTHONS)
def test_x(): ...
""",
    )
    found = {(e.api, e.client) for e in gen.collect(tests, tmp_path)}
    assert found == {
        (a, c) for a in ("Produce", "Metadata", "OffsetDelete") for c in ("kafka-python", "aiokafka")
    }


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('@pytest.mark.kafka_api("Produce")\ndef test_x(): ...', "needs client="),
        ('@pytest.mark.kafka_api(client="kcat")\ndef test_x(): ...', "names no API"),
        ('@pytest.mark.kafka_api("Produce", client="librdkafka")\ndef test_x(): ...', "unknown client"),
        ('@pytest.mark.kafka_api(API, client="kcat")\ndef test_x(): ...', "must be string literals"),
        ('@pytest.mark.kafka_api(*UNKNOWN, client="kcat")\ndef test_x(): ...', "module-level tuple"),
        ('@pytest.mark.kafka_api("Produce", client="kcat", v=3)\ndef test_x(): ...', "not v="),
        (
            '@pytest.mark.parametrize("c", [pytest.param(1, marks=pytest.mark.kafka_api("Produce", '
            'client="kcat"))])\ndef test_x(c): ...',
            "not on a test function or pytestmark",
        ),
    ],
)
def test_unreadable_markers_fail_with_file_and_line(tmp_path: Path, source: str, message: str) -> None:
    tests = write(tmp_path, "test_bad.py", "import pytest\n" + source + "\n")
    with pytest.raises(gen.MarkerError, match=message) as exc:
        gen.collect(tests, tmp_path)
    assert str(exc.value).startswith("tests/test_bad.py:")


def test_unknown_api_and_untested_handler_are_refused(tmp_path: Path) -> None:
    tests = write(
        tmp_path,
        "test_c.py",
        '@pytest.mark.kafka_api("Produce", "Metadta", client="kcat")\ndef test_x(): ...',
    )
    with pytest.raises(gen.MarkerError, match=r"tests/test_c.py::test_x: kafka_api names 'Metadta'"):
        gen.render(gen.collect(tests, tmp_path), SERVED)
    only_produce = [e for e in gen.collect(tests, tmp_path) if e.api == "Produce"]
    with pytest.raises(gen.MarkerError, match=r"no test is marked .* for Metadata, OffsetDelete"):
        gen.render(only_produce, SERVED)


def test_check_mode_reports_a_stale_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "compatibility.md"
    out.write_text("stale\n")
    assert gen.main(["--out", str(out), "--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert gen.main(["--out", str(out)]) == 0
    assert gen.main(["--out", str(out), "--check"]) == 0
