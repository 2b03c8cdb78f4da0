"""One partition's log on disk: segments, indexes, recovery, retention. Knows nothing of the network.

Kafka's storage, in Kafka's vocabulary (storage/.../internals/log/ in apache/kafka), on Kafka's
on-disk format, so a Kafka operator can read the data directory:

- ``log.PartitionLog`` (Kafka's UnifiedLog): append, read, ListOffsets, roll, retention,
  DeleteRecords, flush (group commit), close with a clean-shutdown marker; the last stable
  offset and the aborted transactions a read_committed fetch needs.
- ``log_loader.LogLoader``: opening a log, with recovery when it was not closed cleanly.
- ``log_segments.LogSegments``: the ordered segments and the lookups over them.
- ``log_segment.LogSegment``: one ``.log`` file with its ``offset_index.OffsetIndex`` and
  ``time_index.TimeIndex`` (memory-mapped, binary-searched with numpy) and its
  ``transaction_index.TransactionIndex`` (the aborted transactions whose marker it holds).
- ``log_validator``: the checks and in-place offset assignment of appended batches.
- ``producer_state.ProducerStateManager``: idempotent-producer sequences and the transactions
  open in the partition; ``producer_snapshot``: its ``.snapshot`` files (Kafka's format).
- ``group_commit.GroupCommit``: many "make offset X durable" callers share one fdatasync.
- ``checkpoint``: the recovery-point and log-start-offset checkpoint files (and the framing of
  ``leader_epoch_checkpoint``); ``partition_metadata``: the topic id; ``clean_shutdown``: the marker.
- ``file_names``: every file name and temporary suffix.
- ``errors``: typed errors carrying the Kafka error code to answer with.
- ``verify/``: offline checks of all of the above (``shardbroker check``, ``dump-log``).

Each module's docstring opens with the byte layout it owns. Nothing here uses sockets, asyncio,
signals or processes; blocking calls (``flush``) are meant for an executor thread.
"""

from shardbroker.storage.errors import KafkaStorageError, StorageError
from shardbroker.storage.log import FetchDataInfo, LogAppendInfo, PartitionLog

__all__ = ["FetchDataInfo", "KafkaStorageError", "LogAppendInfo", "PartitionLog", "StorageError"]
