"""``shardbroker users`` and the admin client's SCRAM calls against the fake broker
(tests/unit/kafka_fake.py), whose AlterUserScramCredentials runs the controller's own state machine:
argument checking (exit 2 before any connection), password handling (file, pipe, terminal; never
echoed, never empty), the request layouts, the output, refusals with their Kafka error (exit 1),
and bootstrapping a credential into a data dir without a broker. Opens loopback sockets."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.handlers.alter_user_scram_credentials import controller_args
from shardbroker.cli import users as users_cli
from shardbroker.cli.main import main
from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_users import ScramCredentialInfo, ScramDeletion, scram_upsertion
from shardbroker.client.connection import KafkaApiError
from shardbroker.control import controller_state as cs
from shardbroker.control.metadata_log import DataDirLock, MetadataLog
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.scram_credential import ScramMechanism, salted_password
from tests.unit.kafka_fake import FakeBroker, closed_port, running_fake

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
PASSWORD = "correct horse battery staple"


class ScramFake:
    """A broker serving both SCRAM APIs: alter through `controller_state.handle`, describe from
    the resulting state; ``top_error`` makes Describe refuse the whole request."""

    def __init__(self, fake: FakeBroker) -> None:
        self.fake = fake
        self.state = cs.ControllerState()
        self.top_error = 0
        fake.versions.update({50: (0, 0), 51: (0, 0)})
        fake.handlers.update({50: self.describe, 51: self.alter})

    def alter(self, version: int, request: Any) -> Message:
        args = controller_args(request)
        outcome = cs.handle(self.state, "alter_scram_credentials", args, cs.OpContext(workers=1))
        self.state = outcome.state
        R = m.AlterUserScramCredentialsResponse
        return R(
            results=[
                R.AlterUserScramCredentialsResult(
                    user=r["user"], error_code=r["error_code"], error_message=r["error_message"]
                )
                for r in outcome.result["results"]
            ]
        )

    def describe(self, version: int, request: Any) -> Message:
        R = m.DescribeUserScramCredentialsResponse
        if self.top_error:
            return R(error_code=self.top_error, error_message="no", results=[])
        creds = self.state.scram_credentials
        names = sorted(creds) if not request.users else [u.name for u in request.users]
        results = []
        for name in names:
            if name in creds:
                infos = [
                    R.CredentialInfo(mechanism=int(k), iterations=c.iterations)
                    for k, c in creds[name].items()
                ]
                results.append(
                    R.DescribeUserScramCredentialsResult(
                        user=name, error_message=None, credential_infos=infos
                    )
                )
            else:
                results.append(
                    R.DescribeUserScramCredentialsResult(
                        user=name,
                        error_code=ErrorCode.RESOURCE_NOT_FOUND,
                        error_message=f"no {name}",
                        credential_infos=[],
                    )
                )
        return R(error_message=None, results=results)


@pytest.fixture
def scram() -> Iterator[ScramFake]:
    with running_fake() as fake:
        yield ScramFake(fake)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["users", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def piped(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    """stdin as a pipe carrying ``data``."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))


def password_file(tmp_path: Path, text: str = PASSWORD + "\n") -> Path:
    path = tmp_path / "pw"
    path.write_text(text)
    return path


def cli(capsys: pytest.CaptureFixture[str], scram: ScramFake, *argv: str) -> tuple[int, str, str]:
    return run(capsys, *argv, "--bootstrap-server", scram.fake.address)


# -- usage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "alice"], "the following arguments are required: --mechanism"),
        (["add", "alice", "--mechanism", "SCRAM-SHA-1"], "unknown SCRAM mechanism 'SCRAM-SHA-1'"),
        (["add", "alice", "--mechanism", "PLAIN"], "one of SCRAM-SHA-256, SCRAM-SHA-512"),
        (
            ["add", "alice", "--mechanism", "SCRAM-SHA-512", "--iterations", "4095"],
            "must be in [4096, 16384]",
        ),
        (
            ["add", "alice", "--mechanism", "SCRAM-SHA-512", "--iterations", "16385"],
            "UNACCEPTABLE_CREDENTIAL",
        ),
        (["add", "alice", "--mechanism", "SCRAM-SHA-512", "--password", "x"], "unrecognized arguments"),
        (["delete", "alice"], "the following arguments are required: --mechanism"),
        (["list", "--format", "xml"], "invalid choice: 'xml'"),
        (["rename"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    port = closed_port()  # never reached: usage is checked first
    code, out, err = run(capsys, *argv, "--bootstrap-server", f"127.0.0.1:{port}")
    assert code == 2, err
    assert message in err and out == ""


def test_data_dir_and_bootstrap_server_exclude_each_other(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["add", "a", "--mechanism", "SCRAM-SHA-256", "--password-file", str(password_file(tmp_path))]
    code, _out, err = run(
        capsys, *argv, "--data-dir", str(tmp_path / "d"), "--bootstrap-server", "127.0.0.1:1"
    )
    assert code == 2 and "takes no --bootstrap-server" in err
    assert not (tmp_path / "d").exists()


def test_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port = closed_port()
    pw = str(password_file(tmp_path))
    for argv in (["add", "a", "--mechanism", "SCRAM-SHA-256", "--password-file", pw], ["list"]):
        code, out, err = run(capsys, *argv, "--bootstrap-server", f"127.0.0.1:{port}")
        assert code == 1 and out == ""
        assert f"shardbroker users {argv[0]}: error: broker 127.0.0.1:{port} unreachable" in err


# -- the password ----------------------------------------------------------------------------------


def sent_upsertion(scram: ScramFake) -> Any:
    ((version, request),) = scram.fake.apis(51)
    assert version == 0 and request.deletions == []
    (u,) = request.upsertions
    return u


def test_add_from_a_password_file_sends_only_the_salted_password(
    capsys: pytest.CaptureFixture[str], scram: ScramFake, tmp_path: Path
) -> None:
    pw = password_file(tmp_path, PASSWORD + "\r\n")
    argv = ["--mechanism", "scram-sha-512", "--iterations", "8192", "--password-file", str(pw)]
    code, out, err = cli(capsys, scram, "add", "alice", *argv)
    assert (code, err) == (0, "")
    assert out == "set the SCRAM-SHA-512 credential of user 'alice' (8192 iterations)\n"
    u = sent_upsertion(scram)
    assert (u.name, u.mechanism, u.iterations, len(u.salt)) == ("alice", 2, 8192, 32)
    assert bytes(u.salted_password) == salted_password(SHA512, PASSWORD.encode(), bytes(u.salt), 8192)
    assert scram.state.scram_credentials["alice"][SHA512].iterations == 8192


def test_add_reads_a_pipe_and_never_echoes(
    capsys: pytest.CaptureFixture[str], scram: ScramFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    piped(monkeypatch, ("pässword\n").encode())
    code, out, err = cli(capsys, scram, "add", "bob", "--mechanism", "SCRAM-SHA-256")
    assert code == 0 and "pässword" not in out + err
    u = sent_upsertion(scram)
    assert u.iterations == 4096  # kafka-configs' default
    assert bytes(u.salted_password) == salted_password(SHA256, "pässword".encode(), bytes(u.salt), 4096)


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n"])
def test_empty_password_is_refused(
    capsys: pytest.CaptureFixture[str], scram: ScramFake, monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    piped(monkeypatch, data)
    code, _out, err = cli(capsys, scram, "add", "bob", "--mechanism", "SCRAM-SHA-256")
    assert code == 2 and "refusing an empty password" in err
    assert scram.fake.apis(51) == []


def test_terminal_prompts_twice_without_echo(
    capsys: pytest.CaptureFixture[str], scram: ScramFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["s3cret", "s3cret", "one", "two"])
    prompts: list[str] = []

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    stdin = io.TextIOWrapper(io.BytesIO(b"not read"))
    monkeypatch.setattr(stdin, "isatty", lambda: True)
    monkeypatch.setattr("sys.stdin", stdin)
    monkeypatch.setattr(users_cli.getpass, "getpass", getpass)
    assert cli(capsys, scram, "add", "carol", "--mechanism", "SCRAM-SHA-256")[0] == 0
    assert prompts == ["Password for user 'carol': ", "Again: "]
    u = sent_upsertion(scram)
    assert bytes(u.salted_password) == salted_password(SHA256, b"s3cret", bytes(u.salt), 4096)
    code, _out, err = cli(capsys, scram, "add", "carol", "--mechanism", "SCRAM-SHA-256")
    assert code == 2 and "the two passwords differ" in err
    assert len(scram.fake.apis(51)) == 1


def test_missing_password_file_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _out, err = run(
        capsys, "add", "a", "--mechanism", "SCRAM-SHA-256", "--password-file", str(tmp_path / "no")
    )
    assert code == 1 and "cannot read password file" in err


# -- add, list, delete against a broker ------------------------------------------------------------


def test_list_delete_and_refusals(
    capsys: pytest.CaptureFixture[str], scram: ScramFake, tmp_path: Path
) -> None:
    pw = str(password_file(tmp_path))
    assert cli(capsys, scram, "list") == (0, "No SCRAM users.\n", "")
    assert cli(capsys, scram, "add", "alice", "--mechanism", "SCRAM-SHA-256", "--password-file", pw)[0] == 0
    assert cli(capsys, scram, "add", "alice", "--mechanism", "SCRAM-SHA-512", "--iterations", "5000",
               "--password-file", pw)[0] == 0  # fmt: skip
    code, out, err = cli(capsys, scram, "list")
    assert code == 0 and out.splitlines() == [
        "USER   MECHANISM      ITERATIONS",
        "alice  SCRAM-SHA-256  4096",
        "alice  SCRAM-SHA-512  5000",
    ]
    code, out, err = cli(capsys, scram, "list", "alice", "nobody", "--format", "json")
    assert code == 1 and json.loads(out) == [
        {"user": "alice", "mechanism": "SCRAM-SHA-256", "iterations": 4096},
        {"user": "alice", "mechanism": "SCRAM-SHA-512", "iterations": 5000},
    ]
    assert "RESOURCE_NOT_FOUND: user 'nobody': no nobody" in err
    ((_, request), *_) = [a for a in scram.fake.apis(50) if a[1].users]
    assert [u.name for u in request.users] == ["alice", "nobody"]

    assert cli(capsys, scram, "delete", "alice", "--mechanism", "SCRAM-SHA-256") == (
        0,
        "deleted the SCRAM-SHA-256 credential of user 'alice'\n",
        "",
    )
    code, out, err = cli(capsys, scram, "delete", "alice", "--mechanism", "SCRAM-SHA-256")
    assert code == 1 and out == ""
    assert (
        "shardbroker users delete: error: RESOURCE_NOT_FOUND: user 'alice': "
        "Attempt to delete a user credential that does not exist" in err
    )
    assert list(scram.state.scram_credentials["alice"]) == [SHA512]


def test_admin_client_calls(scram: ScramFake) -> None:
    with AdminClient(scram.fake.address, timeout=5) as admin:
        done = admin.alter_user_scram_credentials(
            upsertions=[
                scram_upsertion("a", SHA256, b"pw"),
                scram_upsertion("b", SHA512, b"pw", 4096, b"salt"),
            ],
            deletions=[ScramDeletion("c", SHA256)],
        )
        assert done["a"] is None and done["b"] is None
        failed = done["c"]
        assert isinstance(failed, KafkaApiError) and failed.error_code == ErrorCode.RESOURCE_NOT_FOUND
        assert admin.describe_user_scram_credentials() == {
            "a": [ScramCredentialInfo("SCRAM-SHA-256", 4096)],
            "b": [ScramCredentialInfo("SCRAM-SHA-512", 4096)],
        }
        scram.top_error = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
        with pytest.raises(KafkaApiError, match="CLUSTER_AUTHORIZATION_FAILED"):
            admin.describe_user_scram_credentials(["a"])
    assert scram.state.scram_credentials["b"][SHA512].salt == b"salt"
    assert "pw" not in repr(scram_upsertion("a", SHA256, b"pw"))  # no salted password in reprs


# -- bootstrapping a data dir ----------------------------------------------------------------------


def test_add_into_a_data_dir_without_a_broker(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    pw = str(password_file(tmp_path))
    code, out, err = run(
        capsys, "add", "admin", "--mechanism", "SCRAM-SHA-512", "--password-file", pw, "--data-dir", str(data)
    )
    assert code == 0, err
    log = MetadataLog(data)
    state = log.open()
    log.close()
    what = "set the SCRAM-SHA-512 credential of user 'admin' (4096 iterations)"
    assert out == f"{what} in data dir {data} (cluster {log.cluster_id})\n"
    cred = state.image("c", ()).scram_credential("admin", SHA512)
    assert cred is not None
    expected = salted_password(SHA512, PASSWORD.encode(), cred.salt, 4096)
    raw = (data / "__cluster_metadata" / "metadata.log").read_bytes()
    assert expected.hex().encode() not in raw and PASSWORD.encode() not in raw
    client_key = hmac.digest(expected, b"Client Key", "sha512")
    assert cred.stored_key == hashlib.sha512(client_key).digest()
    # a second user, and the controller's refusals apply here too
    assert (
        run(
            capsys,
            "add",
            "ops",
            "--mechanism",
            "SCRAM-SHA-256",
            "--password-file",
            pw,
            "--data-dir",
            str(data),
        )[0]
        == 0
    )
    code, out, err = run(
        capsys, "add", "", "--mechanism", "SCRAM-SHA-256", "--password-file", pw, "--data-dir", str(data)
    )
    assert code == 1 and "UNACCEPTABLE_CREDENTIAL: user '': Username must not be empty" in err
    log = MetadataLog(data)
    assert sorted(log.open().scram_credentials) == ["admin", "ops"]
    log.close()
    assert not (data / ".lock").read_bytes()  # released


def test_add_into_a_data_dir_in_use_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    lock.acquire()  # as a running broker holds it
    try:
        pw = str(password_file(tmp_path))
        code, _out, err = run(
            capsys,
            "add",
            "a",
            "--mechanism",
            "SCRAM-SHA-256",
            "--password-file",
            pw,
            "--data-dir",
            str(tmp_path),
        )
    finally:
        lock.release()
    assert code == 1 and "is in use by another shardbroker" in err
    assert not (tmp_path / "__cluster_metadata").exists()
