"""``shardbroker serve``: flags and their refusals in-process; then the real thing in a subprocess
with a minimal worker setup (the channel and a probe service, no Kafka listener): readiness
lines, an admin request across fork, a SIGKILLed worker respawned onto the current metadata,
SIGTERM -> exit 0 with nothing left in /dev/shm, and a restart that remembers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shardbroker.cli.main import main
from shardbroker.config.broker_properties import BROKER_CONFIGS
from shardbroker.control.metadata_log import DataDirLock
from shardbroker.ipc.shm import instance_name
from tests.ports import free_port_block

REPO = Path(__file__).resolve().parents[2]
SHM = Path("/dev/shm")


def serve_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["serve", "--data-dir", str(tmp_path / "data"), "--workers", "1", *extra]


def test_help_documents_flags_and_config_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for text in ("--config", "--data-dir", "--workers", "--listen", "--advertise", "--metrics"):
        assert text in out
    for key in BROKER_CONFIGS.values():  # every row, set apart from its description, with its default
        assert f"\n  {key.name} " in out, key.name
        assert key.default is None or f"[{key.default}]" in out, key.name
    assert "127.0.0.1:9092" in out and "127.0.0.1:9404" in out and "./shardbroker-data" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--workers", "0"], "must be at least 1"),
        (["--workers", "many"], "not a number"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", *args])
    assert exit_.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "toml", "fragment"),
    [
        (["--listen", "localhost"], None, "expected HOST:PORT"),
        (["--metrics", "nohost:port"], None, "port is not a number"),
        ([], '"log.retension.ms" = 1\n', "did you mean log.retention.ms?"),
        ([], '"num.partitions" = 0\n', "num.partitions"),
        ([], '"group.initial.rebalance.delay.ms" = "abc"\n', "group.initial.rebalance.delay.ms"),
        ([], '"log.retention.check.interval.ms" = "-5"\n', "log.retention.check.interval.ms: must be in [1,"),
        ([], "not toml = =", "not valid TOML"),
    ],
)
def test_bad_config_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], toml: str | None, fragment: str
) -> None:
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        args = [*args, "--config", str(tmp_path / "c.toml")]
    assert main(serve_args(tmp_path, *args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("shardbroker serve: ") and fragment in err
    assert not (tmp_path / "data").exists()


def test_locked_data_dir_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = DataDirLock(tmp_path / "data")
    lock.acquire()
    try:
        assert main(serve_args(tmp_path, "--listen", f"127.0.0.1:{free_port_block(2)}")) == 1
    finally:
        lock.release()
    assert "is in use by another shardbroker" in capsys.readouterr().err


def test_busy_port_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(serve_args(tmp_path, "--listen", f"127.0.0.1:{port}")) == 1
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err
    DataDirLock(tmp_path / "data").acquire()  # released again on the way out


def test_data_dir_that_is_a_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").write_text("")
    assert main(serve_args(tmp_path)) == 1
    assert "is not a directory" in capsys.readouterr().err


def test_instance_name_is_per_data_dir(tmp_path: Path) -> None:
    a, b = instance_name(tmp_path / "a"), instance_name(tmp_path / "b")
    assert a != b and a == instance_name(tmp_path / "x" / ".." / "a")
    assert a.startswith("sb") and len(a) == 10 and a.isalnum()


def test_python_dash_m_shardbroker_is_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shardbroker", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("shardbroker ")


# --- the real thing, with a minimal worker -----------------------------------------------------


class Probe:
    """A worker service: worker 0 asks the controller to create a topic; every worker writes
    what it saw at boot to ``<out>/w<slot>-<pid>.json``."""

    def __init__(self, channel: Any, out: Path) -> None:
        self.channel = channel
        self.out = out

    async def start(self, worker: Any) -> None:
        report: dict[str, Any] = {
            "topics": sorted(self.channel.image.topics),
            "version": self.channel.image.version,
        }
        if worker.slot == 0:
            report["create"] = await self.channel.request(
                "create_topics",
                {"topics": [{"name": "probe", "num_partitions": 3, "replication_factor": 1, "configs": {}}]},
                timeout=10,
            )
        path = self.out / f"w{worker.slot}-{os.getpid()}.json"
        path.with_suffix(".tmp").write_text(json.dumps(report))
        path.with_suffix(".tmp").rename(path)

    async def drain(self) -> None:
        return None


def serve_for_test(data_dir: str, port: int, out: str) -> None:
    """The subprocess's main: ``serve`` with the Probe instead of the Kafka services."""
    import logging

    from shardbroker.config.broker_config import BrokerConfig
    from shardbroker.serve import serve
    from shardbroker.supervision.policy import Policy

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    config = BrokerConfig.load(None, {"log.dirs": data_dir, "workers": "2", "listeners": f"127.0.0.1:{port}"})
    code = serve(
        config,
        policy=Policy(drain_timeout=5.0),
        install=lambda worker, cfg, channel: worker.add_service(Probe(channel, Path(out))),
    )
    sys.exit(code)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def reports(out: Path, slot: int) -> dict[int, dict[str, Any]]:
    return {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in out.glob(f"w{slot}-*.json")}


def start(tmp_path: Path, port: int, out: Path) -> tuple[subprocess.Popen[str], Path]:
    log = tmp_path / f"serve-{time.monotonic_ns()}.out"
    code = (
        "from tests.unit.test_cli_serve import serve_for_test; "
        f"serve_for_test({str(tmp_path / 'data')!r}, {port}, {str(out)!r})"
    )
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            stdout=f,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return proc, log


def test_serve_end_to_end_with_a_minimal_worker(tmp_path: Path) -> None:
    instance = instance_name(tmp_path / "data")
    out = tmp_path / "reports"
    out.mkdir()
    port = free_port_block(2)
    proc, log = start(tmp_path, port, out)
    try:
        lines = wait_for(
            lambda: [ln for ln in log.read_text().splitlines() if " listening on " in ln][:2] or proc.poll(),
            20,
            "the listening lines",
        )
        assert lines == [
            f"shardbroker: node 0 listening on 127.0.0.1:{port}",
            f"shardbroker: node 1 listening on 127.0.0.1:{port + 1}",
        ], log.read_text()
        (w0,) = reports(out, 0).values()
        assert w0["create"]["topics"][0]["error_code"] == 0 and w0["version"] == -1
        (old_pid,) = reports(out, 1)
        # SIGKILL worker 1: its replacement boots on the current image, with the topic.
        os.kill(old_pid, signal.SIGKILL)
        fresh = wait_for(
            lambda: {k: v for k, v in reports(out, 1).items() if k != old_pid}, 20, "a new worker 1"
        )
        (report,) = fresh.values()
        assert report == {"topics": ["probe"], "version": 0}
        assert list(SHM.glob(f"shardbroker-{instance}-*"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
        assert not list(SHM.glob(f"shardbroker-{instance}-*"))
        # Restart on the same data dir: the topic is remembered.
        for p in out.iterdir():
            p.unlink()
        proc, log = start(tmp_path, port, out)
        wait_for(lambda: (reports(out, 0) and reports(out, 1)) or proc.poll(), 20, "restarted workers")
        (w0,) = reports(out, 0).values()
        assert w0["topics"] == ["probe"] and w0["create"]["topics"][0]["error_code"] == 36, w0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for path in SHM.glob(f"shardbroker-{instance}-*"):
            path.unlink()
