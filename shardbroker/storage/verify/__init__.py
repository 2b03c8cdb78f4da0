"""Offline verification of partition logs: what ``shardbroker dump-log``, ``shardbroker check`` and
``topics describe --data-dir`` report. Opens files read-only; never writes, locks, maps or resizes anything.

No byte layout of its own: it reads the layouts of record_batch_header.py (``.log``), offset_index.py,
time_index.py, transaction_index.py, producer_snapshot.py, checkpoint.py, partition_metadata.py and
leader_epoch_checkpoint.py with their
decoders, and holds them to the rules the broker itself keeps (log_segment.py's index rule,
log_loader.py's recovery). One module per file kind:

- ``problems``: a finding (`Problem`) and its `Severity`, the vocabulary of every report.
- ``segments``: reading a ``.log`` in chunks and judging its batches as recovery would.
- ``indexes``: ``.index`` and ``.timeindex`` entries against the batches of their segment.
- ``checkpoints``: the recovery-point, log-start-offset and cleaner-offset checkpoints against the log.
- ``partition_files``: ``partition.metadata`` and ``leader-epoch-checkpoint``.
- ``transactions``: ``.txnindex`` entries against the log's ABORT markers; snapshots readable.
- ``partition``: one ``<topic>-<partition>`` directory (`verify_partition`) and the data-dir walk.
- ``cleaner_state``: the log cleaner's numbers for a compacted partition (``topics describe
  --data-dir``), from its files.
"""
