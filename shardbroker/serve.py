"""``shardbroker serve``: the supervisor, the controller and the workers, wired together.

Opens the data dir (lock, metadata log), probes the Kafka ports with a bind, creates shared
memory, forks the workers, handles signals (through supervision/supervisor.py).

Start-up, in order, each refusal a one-line message and a non-zero exit before anything forks:
the config (flags over the TOML file, config/broker_config.py), the data dir (created 0700 if
missing, locked with ``.lock`` so two brokers never share it, checked writable; a warning names
what of it group or others may access: storage/file_modes.py), the ports (worker i binds
``listen port + i``: a port already taken fails here rather than as a worker boot failure), the
leftovers of a crashed run of the same data dir (``shm.reclaim_stale``), then the controller's
metadata log and rings, the shared counter table (ipc/counters.py) and committed-offsets table
(ipc/group_offsets.py, for the consumer group lag), then the supervisor and its workers. The
/metrics address is probed before the fork like the Kafka ports, and bound once the first
workers are forked: its sockets live on the supervisor's loop (observability/metrics_http.py),
so later forks close them in the children.

Instance name: ``sb`` + 8 hex digits of the SHA-256 of the absolute data dir. Shared memory is
named after it (``/dev/shm/shardbroker-sb1234abcd-*``), so brokers on different data dirs never
collide, and a restart on the same data dir finds (and reclaims) what a SIGKILLed run left. Two
brokers on one data dir cannot both get this far: the lock comes first.

Readiness: one line per listener per worker on stdout, ``shardbroker: node <i> listening on
HOST:PORT`` (followed by `` (NAME, PROTOCOL)`` for any listener but PLAINTEXT, ``ready_line``),
printed once every worker reached READY (its listeners are bound, its partitions are open). No
address is printed before that, so a script may take the first ``HOST:PORT`` it sees as usable.
Before forking, every listener's ports are probed and, once the metadata log is open (it keeps
the dynamic key store settings), every TLS listener's stores are loaded, then /metrics' TLS
context and basic-auth table (observability/metrics_security.py).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from shardbroker.broker.client_quota_manager import slices_of
from shardbroker.broker.tls import TlsConfigError, TlsSettings
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    AUTO_LEADER_REBALANCE_ENABLE,
    EVENT_LOOP,
    LOCAL_CLIENTS_ALLOWED_GROUP,
    QUOTA_WINDOW_NUM,
    RING_READER_SPIN_US,
)
from shardbroker.config.config_def import ConfigError
from shardbroker.config.listeners import Endpoint
from shardbroker.control.auto_rebalance import AutoRebalancer, PartitionLoad
from shardbroker.control.controller import Controller
from shardbroker.control.metadata_log import DataDirLock, MetadataLogError
from shardbroker.ipc import ring_reader, shm
from shardbroker.ipc.client_quotas import ClientQuotaTable
from shardbroker.ipc.client_telemetry import ClientTelemetryTable
from shardbroker.ipc.counters import CounterTable
from shardbroker.ipc.group_offsets import GroupOffsetTable
from shardbroker.ipc.local_access import LocalAccessError, allowed_group, check_broker_in_group
from shardbroker.ipc.ring_names import Direction, control_ring
from shardbroker.metadata.image import TopicImage
from shardbroker.observability.client_telemetry import ClientTelemetrySource
from shardbroker.observability.group_lag import GroupLagSource
from shardbroker.observability.metrics import MetricsCollector
from shardbroker.observability.metrics_http import MetricsServer
from shardbroker.observability.metrics_security import MetricsSecurity
from shardbroker.observability.ring_metrics import ClientRings, RingStat
from shardbroker.observability.system_metrics import DataDirSource, WorkerProcessSource

# Imported before the workers are forked: its stand-in SCRAM salt key is then the same in every
# worker (an unknown user's salt must not differ from one worker to the next).
from shardbroker.security import sasl_scram  # noqa: F401
from shardbroker.storage.file_modes import loose_paths
from shardbroker.supervision.event_loop import loop_factory
from shardbroker.supervision.heartbeat import HeartbeatTable, SegmentInUse
from shardbroker.supervision.policy import Phase, Policy
from shardbroker.supervision.supervisor import Supervisor, SupervisorConfig
from shardbroker.supervision.worker import Worker

log = logging.getLogger(__name__)

#: Exit codes: 1 = the broker could not start (data dir, ports, shared memory); 2 = bad usage
#: (argparse's own); 3 = a worker failed to boot (supervision.policy.BOOT_ERROR_EXIT).
EXIT_START_FAILED = 1
EXIT_USAGE = 2

ExtraSetup = Callable[[Worker, BrokerConfig, object], None]


class ServeError(Exception):
    """The broker cannot start; the message says why, for the operator."""


def check_ports(host: str, first: int, count: int, listener: str = "PLAINTEXT") -> None:
    """Bind each Kafka port of a listener once (SO_REUSEADDR, as the listeners) and let go: a
    clear message now instead of a worker boot failure later. Racy by nature; the workers' own
    binds still decide."""
    named = "" if listener == "PLAINTEXT" else f", listener {listener}"
    for port in range(first, first + count):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ServeError(
                        f"port {port} on {host} is already in use (worker {port - first}{named})"
                    ) from None
                raise ServeError(f"cannot listen on {host}:{port}{named}: {exc.strerror or exc}") from None


def check_tls(config: BrokerConfig, dynamic: Mapping[str, str]) -> None:
    """Load every TLS listener's key and trust stores once (with the dynamic configs the metadata
    log keeps), so a bad file, password or rule stops the start with its reason instead of
    failing every worker's boot."""
    try:
        config = config.with_dynamic(dynamic)
    except ConfigError as exc:
        raise ServeError(f"dynamic broker configs in the metadata log: {exc}") from None
    for endpoint in config.listeners:
        if endpoint.uses_tls:
            try:
                TlsSettings.load(config.for_listener(endpoint.listener))
            except TlsConfigError as exc:
                raise ServeError(str(exc)) from None


def warn_loose_modes(data_dir: Path, shown: int = 5) -> None:
    """One warning naming what of the data dir group or others may access (storage/file_modes.py:
    shardbroker creates 0600/0700 and, as Kafka, changes no existing mode)."""
    loose = loose_paths(data_dir)
    if loose:
        more = f" and {len(loose) - shown} more" if len(loose) > shown else ""
        log.warning(
            "data dir %s: %d files and directories are open to group or others (%s%s); shardbroker "
            "creates its own 0600/0700 but changes no existing mode: `chmod -R go-rwx %s` tightens them",
            data_dir,
            len(loose),
            ", ".join(str(p) for p in loose[:shown]),
            more,
            data_dir,
        )


def ready_line(node_id: int, endpoint: Endpoint) -> str:
    """``shardbroker: node I listening on HOST:PORT``, with `` (NAME, PROTOCOL)`` after it for any
    listener but the plain ``PLAINTEXT`` one (scripts take the first HOST:PORT they see)."""
    line = f"shardbroker: node {node_id} listening on {_hostport(endpoint.host, endpoint.port_of(node_id))}"
    if endpoint.listener == "PLAINTEXT" and endpoint.security_protocol == "PLAINTEXT":
        return line
    return f"{line} ({endpoint.listener}, {endpoint.security_protocol})"


class BrokerSupervisor(Supervisor):
    """The supervisor with the controller on its loop and the readiness announcement."""

    def __init__(
        self,
        config: SupervisorConfig,
        setup: Callable[[Worker], None],
        controller: Controller,
        announce: Callable[[], None],
        metrics: MetricsServer | None = None,
    ) -> None:
        super().__init__(config, setup)
        self.controller = controller
        self._announce = announce
        self.metrics = metrics
        self.announced = False
        #: The controller's own moves (control/auto_rebalance.py); None when auto.leader.rebalance.enable
        #: is off.
        self.rebalancer: AutoRebalancer | None = None
        controller.is_live = self._is_live

    def _is_live(self, slot: int) -> bool:
        return self.supervision.slots[slot].pid is not None

    def start(self) -> None:
        super().start()
        self.controller.attach(self.register)
        if self.metrics is not None:
            try:
                self.metrics.start(self.register, self.unregister)
            except OSError as exc:
                raise ServeError(
                    f"cannot serve /metrics on {_hostport(self.metrics.host, self.metrics.port)}: "
                    f"{exc.strerror or exc}"
                ) from None

    def close(self) -> None:
        if self.metrics is not None and self._selector is not None:
            self.metrics.close()
        super().close()

    def _spawn(self, slot: int, restarts: int) -> None:
        # The rings of the slot are reset and primed with the current image before the fork.
        self.controller.before_spawn(slot)
        super()._spawn(slot, restarts)

    def step(self, timeout: float | None = None) -> bool:
        done = super().step(timeout)
        if self._selector is not None:  # not in a forked child, not after close
            self.controller.poll()
            if self.rebalancer is not None and self.supervision.phase is Phase.RUNNING:
                self.rebalancer.poll()
            if (
                not self.announced
                and self.supervision.phase is Phase.RUNNING
                and all(rec.ready_at is not None for rec in self.supervision.slots)
            ):
                self.announced = True
                self._announce()
        return done


def serve(
    config: BrokerConfig,
    *,
    policy: Policy | None = None,
    install: ExtraSetup | None = None,
    out: Callable[[str], None] | None = None,
) -> int:
    """Run the broker in the foreground until SIGTERM/SIGINT; returns the exit code.

    ``install(worker, config, channel)`` registers the worker's services after its controller
    channel (default: ``shardbroker.broker.server.install``); tests pass a smaller one.
    """
    say = out or (lambda line: print(line, flush=True))
    data_dir = config.data_dir.absolute()
    instance = shm.instance_name(data_dir)
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except MetadataLogError as exc:
        raise ServeError(str(exc)) from None
    controller: Controller | None = None
    counters: CounterTable | None = None
    group_offsets: GroupOffsetTable | None = None
    client_telemetry: ClientTelemetryTable | None = None
    client_quotas: ClientQuotaTable | None = None
    try:
        warn_loose_modes(data_dir)
        for endpoint in config.listeners:
            check_ports(endpoint.host, endpoint.port, config.workers, endpoint.listener)
        if config.metrics_port:
            _check_metrics_port(config.metrics_host, config.metrics_port)
        _check_local_group(config)
        report = shm.reclaim_stale(instance)
        if report.reclaimed:
            log.info("reclaimed %d shared-memory objects of a previous run", len(report.reclaimed))
        controller = Controller(config, instance)
        try:
            controller.open()
        except MetadataLogError as exc:
            raise ServeError(str(exc)) from None
        except OSError as exc:
            raise ServeError(f"cannot open the metadata log in {data_dir}: {exc.strerror or exc}") from None
        check_tls(config, controller.state.broker_configs)
        try:
            metrics_security = MetricsSecurity.load(config)
        except ValueError as exc:  # TlsConfigError, MetricsSecurityError
            raise ServeError(str(exc)) from None
        counters = CounterTable.create(instance, config.workers, listeners=len(config.listeners))
        group_offsets = GroupOffsetTable.create(instance, config.workers)
        client_telemetry = ClientTelemetryTable.create(instance, config.workers)
        client_quotas = ClientQuotaTable.create(
            instance, config.workers, slices_of(config.get(QUOTA_WINDOW_NUM))
        )
        setup = _worker_setup(
            controller, config, install, counters, group_offsets, client_telemetry, client_quotas
        )

        def announce() -> None:
            for i in range(config.workers):
                for endpoint in config.listeners:
                    say(ready_line(i, endpoint))

        supervisor = BrokerSupervisor(
            SupervisorConfig(
                instance=instance,
                workers=config.workers,
                policy=policy or Policy(),
                loop_factory=loop_factory(config.get(EVENT_LOOP)),
            ),
            setup,
            controller,
            announce,
        )

        if config.get(AUTO_LEADER_REBALANCE_ENABLE):
            supervisor.rebalancer = AutoRebalancer(controller, PartitionLoad(counters))

        def heartbeats() -> HeartbeatTable | None:  # None until the supervisor starts
            return supervisor.heartbeats

        collector = MetricsCollector(
            counters,
            heartbeats,
            functools.partial(_ring_stats, controller, ClientRings(instance)),
            functools.partial(_topics, controller),
            [e.listener for e in config.listeners],
        )
        collector.add_source(GroupLagSource(counters, group_offsets))
        collector.add_source(ClientTelemetrySource(client_telemetry))
        collector.add_source(WorkerProcessSource(heartbeats))
        collector.add_source(DataDirSource(data_dir))
        supervisor.metrics = MetricsServer(
            config.metrics_host,
            config.metrics_port,
            collector.exposition,
            tls=metrics_security.tls,
            auth=metrics_security.auth,
        )
        try:
            code = supervisor.run()
        except SegmentInUse as exc:
            raise ServeError(str(exc)) from None
        if supervisor.halt_reason is not None:
            print(f"shardbroker serve: {supervisor.halt_reason}", file=sys.stderr, flush=True)
        return code
    finally:
        if client_quotas is not None:
            client_quotas.close()
        if client_telemetry is not None:
            client_telemetry.close()
        if group_offsets is not None:
            group_offsets.close()
        if counters is not None:
            counters.close()
        if controller is not None:
            controller.close()
        lock.release()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_local_group(config: BrokerConfig) -> None:
    """``local.clients.allowed.group`` names a group that exists and the broker's user is in."""
    try:
        group = allowed_group(config.get(LOCAL_CLIENTS_ALLOWED_GROUP))
        if group is not None:
            check_broker_in_group(group)
    except LocalAccessError as exc:
        raise ServeError(str(exc)) from None


def _check_metrics_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            reason = exc.strerror or exc
            raise ServeError(f"cannot serve /metrics on {_hostport(host, port)}: {reason}") from None


def _topics(controller: Controller) -> Iterable[TopicImage]:
    """Every topic with its partitions' owners, as the controller has them now."""
    return controller.state.topics.values()


def _ring_stats(controller: Controller, client_rings: ClientRings) -> list[RingStat]:
    """The controller's rings, labelled by their shm object names, then every other ring of the
    instance (local clients', forwarding), labelled and summed by ``client_rings``."""
    out: list[RingStat] = []
    for s in controller.slots:
        out.append((control_ring(s.slot, Direction.TO_WORKER), s.in_ring.stats()))
        out.append((control_ring(s.slot, Direction.FROM_WORKER), s.out_ring.stats()))
    return out + client_rings()


def _worker_setup(
    controller: Controller,
    config: BrokerConfig,
    install: ExtraSetup | None,
    counters: CounterTable,
    group_offsets: GroupOffsetTable,
    client_telemetry: ClientTelemetryTable,
    client_quotas: ClientQuotaTable,
) -> Callable[[Worker], None]:
    def setup(worker: Worker) -> None:
        # In the forked child: keep this slot's rings, close the rest of the controller's.
        from shardbroker.broker.controller_channel import ControllerChannel

        ring_reader.set_active_spin(config.get(RING_READER_SPIN_US) * 1e-6)  # every reader of the worker
        in_ring, out_ring = controller.for_child(worker.slot)
        channel = ControllerChannel(worker.node_id, in_ring, out_ring)
        worker.add_service(channel)
        if install is not None:
            install(worker, config, channel)
        else:
            from shardbroker.broker.server import install as install_broker

            install_broker(
                worker,
                config,
                channel,
                counters.worker(worker.slot),
                group_offsets.worker(worker.slot),
                client_telemetry.worker(worker.slot),
                client_quotas.worker(worker.slot),
            )

    return setup


def run_cli(config: BrokerConfig) -> int:
    """`serve` with logging set up and refusals turned into messages (the CLI's entry)."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s",
    )
    try:
        return serve(config)
    except ServeError as exc:
        print(f"shardbroker serve: {exc}", file=sys.stderr, flush=True)
        return EXIT_START_FAILED
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
