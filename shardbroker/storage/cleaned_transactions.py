"""What the log cleaner knows about transactions while it walks a log (Kafka's
CleanedTransactionMetadata): which data batches belong to aborted transactions (removed), and
which markers may go once their delete horizon passed.

Input: the aborted transactions overlapping the cleaned range, from the ``.txnindex`` files
(``(producer id, first offset, last offset, lso)``, marker at ``last offset``), walked in offset
order together with the batches. Kafka's rules, per producer:

- a transactional data batch at or after the first offset of an aborted transaction of its
  producer (whose marker is not read yet) is aborted: removed; otherwise it belongs to a
  committed (or still open) transaction, and that transaction now has retained data;
- an ABORT marker may be removed when none of its transaction's data was met in this clean
  (it was removed by an earlier one); while data remains the marker stays, and so does its
  ``.txnindex`` entry, which goes into the cleaned segment's index;
- a COMMIT marker may be removed when no data batch of its transaction was met in this clean;
- a control batch with no records (already emptied) may always go.

A marker that may be removed is removed only once its batch's delete horizon passed
(``delete.retention.ms`` after the clean that first found it removable: log_cleaner.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from shardbroker.protocol.control_records import ControlRecordType
from shardbroker.storage.transaction_index import AbortedTxn

__all__ = ["CleanedTransactions"]


class CleanedTransactions:
    """The walk's state: feed every transactional or control batch in offset order."""

    def __init__(self, aborted: Iterable[AbortedTxn]) -> None:
        #: Aborted transactions not reached yet, by first offset.
        self._pending = deque(sorted(aborted, key=lambda t: t.first_offset))
        #: producer id -> [the aborted transaction open now, whether a data batch of it was met].
        self._ongoing_aborted: dict[int, tuple[AbortedTxn, bool]] = {}
        #: Producers whose open (not aborted) transaction had a data batch in this walk.
        self._ongoing_committed: set[int] = set()
        #: ``.txnindex`` entries of the ABORT markers kept, in marker order.
        self.kept_aborted: list[AbortedTxn] = []

    def _reach(self, offset: int) -> None:
        pending = self._pending
        while pending and pending[0].first_offset <= offset:
            txn = pending.popleft()
            self._ongoing_aborted[txn.producer_id] = (txn, False)

    def data_batch(self, producer_id: int, last_offset: int, has_records: bool) -> bool:
        """A transactional data batch: True when it is aborted (to be removed). A batch without
        records (one an earlier clean emptied and kept for its producer's sequence numbers) is
        no data for its marker to protect (KAFKA-8335: else such markers are never removed)."""
        self._reach(last_offset)
        found = self._ongoing_aborted.get(producer_id)
        if found is not None:
            if has_records:
                self._ongoing_aborted[producer_id] = (found[0], True)
            return True
        if has_records:
            self._ongoing_committed.add(producer_id)
        return False

    def control_batch(self, producer_id: int, last_offset: int, marker: int | None) -> bool:
        """A control batch (``marker``: its record's type, None if it has none): True when it
        may be removed (once its delete horizon passed)."""
        self._reach(last_offset)
        if marker is None:
            return True
        if marker == ControlRecordType.ABORT:
            found = self._ongoing_aborted.pop(producer_id, None)
            if found is not None and found[1]:
                self.kept_aborted.append(found[0])
                return False
            return True
        if marker == ControlRecordType.COMMIT:
            if producer_id in self._ongoing_committed:
                self._ongoing_committed.discard(producer_id)
                return False
            return True
        return False  # an unknown control type: kept, as Kafka does
