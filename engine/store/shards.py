"""Sharded tap arrays of a store: many batches per object, committed at batch granularity.

A sharded store (``extract --shard-rows``; the default on object storage) keeps each tap as a Zarr
v3 array whose objects are shards of ``shard_rows`` rows (:mod:`.shard_format`), so the number of
objects grows with images / shard size instead of batches x taps. A shard is one object, written
whole (an object store cannot append), so the writer holds the inner chunks of the shard being
filled in memory (:class:`ShardBuffer`) and defers the commit of its batches:

1. a batch's tap chunks are encoded (their CRC-32C computed) into the buffer of their shard;
2. its commit is recorded, not written;
3. once every batch of the shard that was pending when the run began is recorded (or at the end
   of the run, or on Ctrl-C: :meth:`ShardBuffer.flush`), each tap's shard object is written
   whole (inner chunks of batches done in an earlier run are read back from the old object and
   kept), and only then the recorded batches' status rows: the commit, as for unsharded stores.

So a batch is done only after its chunks are durable, a kill loses at most the shards being
filled (their batches stay pending and are redone), and ``verify``/``--repair``/``--resume`` work per
inner chunk, i.e. per batch: a redone batch rewrites its shard with the other inner chunks kept.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from ...errors import StoreError
from .format import chunk_key
from .shard_format import ShardIndexError, encode_shard, index_nbytes, inner_chunk, read_index

log = logging.getLogger(__name__)


class ShardBuffer:
    """The shards being filled by one writer of ``store`` (a :class:`~.core.FeatureStore`)."""

    def __init__(self, store):
        self.store = store
        info = store.info
        self.shard_rows = int(info["shard_rows"])
        self.chunk_rows = int(info["chunk_rows"])
        self.per_shard = store.chunks_per_shard
        self._lock = threading.Lock()
        # (output, shard) -> {inner chunk index: (body, CRC-32C) or None (not stored)}
        self._inner: dict[tuple[str, int], dict[int, tuple[bytes, bytes] | None]] = {}
        self._commits: dict[int, dict[int, tuple[dict, tuple]]] = {}
        self._todo: dict[int, set[int]] | None = None

    def shard_of(self, b: int) -> int:
        return self.store.batch_rows(b)[0] // self.shard_rows

    def _key(self, name: str, shard: int) -> str:
        return chunk_key(name, shard, len(self.store.info["outputs"][name]) + 1)

    def _batches_to_do(self) -> dict[int, set[int]]:
        """Per shard, the batches pending when this writer started: the commit of a shard waits for them."""
        if self._todo is None:
            todo: dict[int, set[int]] = {}
            for b in self.store.pending_batches():
                todo.setdefault(self.shard_of(b), set()).add(b)
            self._todo = todo
        return self._todo

    def write(self, name: str, b: int, rows: np.ndarray | None, writer) -> int:
        """Encode batch ``b``'s rows of output ``name`` (None: every row an error, nothing stored)
        into its shard's buffer; ``writer`` is the store's ChunkWriter (its encoder)."""
        self._batches_to_do()
        start, stop = self.store.batch_rows(b)
        c = self.chunk_rows
        encoded = {}
        for k, first in enumerate(range(start, stop, c)):
            if rows is None:
                encoded[first // c] = None
                continue
            part = rows[k * c:(k + 1) * c]
            if len(part) < c:  # the last, partial inner chunk: padded with the fill value, as zarr does
                part = np.concatenate([part, np.zeros((c - len(part), *part.shape[1:]), part.dtype)])
            pieces, crc = writer.encode(np.ascontiguousarray(part))  # views of a reused buffer: copied
            encoded[first // c] = (b"".join(memoryview(p).cast("B") for p in pieces), crc)
        with self._lock:
            self._inner.setdefault((name, self.shard_of(b)), {}).update(encoded)
        return 0 if rows is None else rows.nbytes

    def commit(self, b: int, errors: dict, pending) -> None:
        """Record batch ``b``'s commit; write its shard (then the recorded commits) once complete."""
        shard = self.shard_of(b)
        with self._lock:
            self._commits.setdefault(shard, {})[b] = (dict(errors), tuple(pending))
            complete = set(self._commits[shard]) >= self._batches_to_do().get(shard, set())
        if complete:
            self._flush_shard(shard)

    def flush(self) -> None:
        """Write every shard with recorded commits (the end of a run, Ctrl-C, close)."""
        with self._lock:
            shards = sorted(self._commits)
        for shard in shards:
            self._flush_shard(shard)

    def _flush_shard(self, shard: int) -> None:
        with self._lock:
            commits = self._commits.pop(shard, {})
            inner = {name: self._inner.pop((name, shard), {}) for name in self.store.outputs}
        if not commits:
            for name, chunks in inner.items():  # nothing to commit: keep them for a later flush
                if chunks:
                    with self._lock:
                        self._inner.setdefault((name, shard), {}).update(chunks)
            return
        for name in self.store.outputs:
            self._write_shard(name, shard, inner[name])
        if self._todo is not None:
            self._todo.get(shard, set()).difference_update(commits)
        self.store._commit_many(commits)  # the status rows last: the commit

    def _write_shard(self, name: str, shard: int, new: dict[int, tuple[bytes, bytes] | None]) -> None:
        """Write shard ``shard`` of ``name``: the new inner chunks, and the old object's for the rest."""
        first = shard * self.per_shard
        n_inner = min(self.per_shard, -(-len(self.store) // self.chunk_rows) - first)
        if len(new) < n_inner:
            old = {first + i: (bytes(v[:-4]), bytes(v[-4:])) for i, v in enumerate(self.read_inner(name, shard))
                   if v is not None}
            new = {**old, **new}
        chunks = [None if new.get(ci) is None else ([new[ci][0]], new[ci][1])
                  for ci in range(first, first + self.per_shard)]
        self.store._chunk_writer.write_object(self._key(name, shard), encode_shard(chunks))

    def stored(self, name: str, shard: int, *, strict: bool = False) -> list[bool]:
        """Per inner chunk of a shard, whether its index says it is stored: only the index is read
        (one range request), not the shard. An unusable index is a :class:`StoreError` with
        ``strict`` (readers), else counts as nothing stored (``verify`` reports those rows)."""
        got = self.store._read_tail(self._key(name, shard), index_nbytes(self.per_shard), name)
        if got is None:
            return [False] * self.per_shard
        size, tail = got
        try:
            return [e is not None for e in read_index(tail, self.per_shard, size, self.store.limits[name][0])]
        except ShardIndexError as e:
            if strict:
                raise StoreError(f"{self.store.path}: shard {shard} of {name} is unusable ({e}); run `featuremaps "
                                 f"verify {self.store.path} --repair`, then extract --resume to redo its "
                                 "rows") from None
            return [False] * self.per_shard

    def read_inner(self, name: str, shard: int) -> list[memoryview | None]:
        """The stored inner chunks (body + CRC) of a shard object, or all None when there is none
        (the writer's merge). An unusable index counts as none: the writer rewrites the shard, and
        its rows are redone or reported by ``verify``."""
        blob = self.store._read_object(self._key(name, shard), name)
        if blob is None:
            return [None] * self.per_shard
        try:
            entries = read_index(blob, self.per_shard, len(blob), self.store.limits[name][0])
        except ShardIndexError as e:
            log.warning("%s: shard %d of %s: %s; its inner chunks are rewritten", self.store.path, shard, name, e)
            return [None] * self.per_shard
        return [inner_chunk(blob, e) for e in entries]

