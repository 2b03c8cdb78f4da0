"""shardbroker: a Kafka-compatible message broker for one host.

See DESIGN.md in the shared folder for the process model; the package is laid out by layer:
``protocol`` (sans-IO Kafka codec), ``storage`` (one partition's log), ``broker`` (what a worker
does), ``ipc`` (shared-memory rings and counters), ``client`` (local clients), ``cli``.
"""

__version__ = "0.1.0"
