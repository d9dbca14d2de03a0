"""The FTSS store: write cache 140 mirrored as a RAID 1 (142), committed by one group-commit writer.

Block 154 commits a packet before any acknowledgment that promises something (blocks 160/174).
Here a record is committed once every healthy mirror member has fsynced it, and only then does
its future resolve. One writer thread takes everything queued while the previous fsync ran and
covers it with one fsync per member, so throughput grows with the number of senders while a lone
sender waits for exactly one round of fsyncs (no timer, no batching delay).

On disk each member directory holds the same segment files, byte for byte: ``N.seg`` (appended)
and ``N.cmp`` (a compaction's output, which supersedes every file numbered below it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ftsslab.ftss.log import MAX_KEY, MAX_KIND, MAX_PAYLOAD, OsFiles, Record, decode_at, encode

__all__ = ["Record", "Store", "StoreClosed", "StoreFull"]

SEG, CMP, TMP, LOST = ".seg", ".cmp", ".tmp", ".lost"
_log = logging.getLogger(__name__)

Done = Callable[[int, BaseException | None], None]


class StoreFull(Exception):
    """Appending would exceed the capacity; nothing already stored was dropped (STORE_FULL)."""


class StoreClosed(Exception):
    """The store was closed, or every mirror member failed, so nothing more can be committed."""


@dataclass
class MemberHealth:
    """What recovery and the writer saw on one mirror member; ``ok`` is False if it lost data."""

    failed: bool = False
    missing_files: int = 0
    corrupt_records: int = 0
    torn_records: int = 0
    repaired_files: int = 0
    truncated_bytes: int = 0
    write_errors: int = 0
    lost_files: int = 0

    @property
    def ok(self) -> bool:
        return not (self.failed or self.missing_files or self.corrupt_records or self.write_errors)


@dataclass
class _Compact:
    keep: Callable[[Record], bool]
    future: Future


def _num(name: str) -> int | None:
    stem, ext = os.path.splitext(name)
    return int(stem) if ext in (SEG, CMP) and stem.isdigit() else None


def _name(num: int, ext: str) -> str:
    return f"{num:010d}{ext}"


class Store:
    """A durable, mirrored, append-only record log with group commit.

    ``members`` are directories (≥ 2 for RAID 1; one works, unmirrored). Opening recovers: every
    valid record, in seq order, is in ``recovered``; torn tails are cut and damaged or missing
    member copies are rewritten from a good member (see ``health()``). ``segment_bytes`` bounds a
    segment file, ``capacity_bytes`` the whole log (``StoreFull`` beyond it), ``max_batch`` the
    records per fsync (1 gives the fsync-per-record baseline). ``files`` is the file layer.
    """

    def __init__(
        self,
        members: Sequence[str | Path],
        *,
        segment_bytes: int = 64 << 20,
        capacity_bytes: int | None = None,
        max_batch: int | None = None,
        files: OsFiles | None = None,
    ) -> None:
        if not members:
            raise ValueError("a store needs at least one member directory")
        self._f = files if files is not None else OsFiles()
        # the real disk's mirror members are written in parallel; a simulated disk (tests)
        # keeps one order of operations
        self._mirror = (ThreadPoolExecutor(max(1, len(members) - 1), "ftss-store-mirror")
                        if files is None and len(members) > 1 else None)
        self._members = [str(m) for m in members]
        self._health = {m: MemberHealth() for m in self._members}
        self._segment_bytes = segment_bytes
        self._capacity = capacity_bytes
        self._max_batch = max_batch or (1 << 62)
        self._fds: dict[str, int | None] = {}  # the healthy members
        self._names: list[str] = []
        self._used = 0
        self._active_size = 0
        self._error: StoreClosed | None = None
        self.recovered: list[Record] = self._recover()
        self._next_seq = self.recovered[-1].seq + 1 if self.recovered else 1
        self._open_active()
        self._pending = 0
        self._closing = False
        self._queue: deque = deque()
        self._idle = False  # the writer waits for work (set and read with the lock held)
        self._cond = threading.Condition()
        self._writer = threading.Thread(target=self._run, name="ftss-store-writer", daemon=True)
        self._writer.start()

    # ----------------------------------------------------------------------------- public API

    def submit(self, kind: int, key: int, payload: bytes) -> Future:
        """Queue a record; the future resolves to its seq once it is durable on every member."""
        fut: Future = Future()
        self._enqueue(kind, key, payload, fut)
        return fut

    def submit_cb(self, kind: int, key: int, payload: bytes, done: Done) -> int:
        """Queue a record and return its seq; ``done(seq, error)`` runs on the writer thread."""
        return self._enqueue(kind, key, payload, done)

    def submit_many(self, items: Sequence[tuple[int, int, bytes, Done]]) -> list[int | Exception]:
        """``submit_cb`` for many records at once, in order, with one wake-up of the writer:
        the seq of each, or the exception (``StoreFull``, ``StoreClosed``, ``ValueError``)
        that refused it."""
        out: list[int | Exception] = []
        with self._cond:
            for kind, key, payload, done in items:
                try:
                    out.append(self._enqueue_locked(kind, key, payload, done))
                except (StoreFull, StoreClosed, ValueError) as exc:
                    out.append(exc)
            self._wake()
        return out

    def compact(self, keep: Callable[[Record], bool]) -> Future:
        """Rewrite the log keeping only records ``keep`` accepts; resolves to the bytes freed.

        ``keep`` runs on the writer thread, between commits, and sees every record in seq order.
        """
        fut: Future = Future()
        with self._cond:
            self._check_open()
            self._queue.append(_Compact(keep, fut))
            self._cond.notify()
        return fut

    def health(self) -> dict[str, dict]:
        """Per member directory: counters of what was wrong with it, and ``ok``."""
        return {m: {**asdict(h), "ok": h.ok} for m, h in self._health.items()}

    @property
    def used_bytes(self) -> int:
        """Bytes of committed log (one member's worth), the figure ``capacity_bytes`` limits."""
        return self._used

    def close(self) -> None:
        """Commit everything already submitted, then stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._writer.join()
        if self._mirror is not None:
            self._mirror.shutdown()
        for m in list(self._fds):
            self._close_fd(m)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- submission

    def _check_open(self) -> None:
        if self._closing:
            raise StoreClosed("store is closed")
        if self._error is not None:
            raise self._error

    def _enqueue(self, kind: int, key: int, payload: bytes, done: Future | Done) -> int:
        with self._cond:
            seq = self._enqueue_locked(kind, key, payload, done)
            self._wake()
        return seq

    def _wake(self) -> None:
        """(With the lock held.) A busy writer takes the queue when its commit is done: only
        a waiting one needs the (costly) notification."""
        if self._idle:
            self._cond.notify()

    def _enqueue_locked(self, kind: int, key: int, payload: bytes, done: Future | Done) -> int:
        if not (0 <= kind <= MAX_KIND and 0 <= key <= MAX_KEY and len(payload) <= MAX_PAYLOAD):
            raise ValueError("kind must fit 8 bits, key 64 bits, payload 16 MiB")
        self._check_open()
        seq = self._next_seq
        data = encode(seq, kind, key, payload)
        if self._capacity is not None and (
            self._used + self._pending + len(data) > self._capacity
        ):
            raise StoreFull(f"{len(data)} more bytes would exceed {self._capacity}")
        self._next_seq = seq + 1
        self._pending += len(data)
        self._queue.append((seq, data, done))
        return seq

    # -------------------------------------------------------------------------------- writer

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                if not self._queue:
                    return
                if isinstance(self._queue[0], _Compact):
                    op = self._queue.popleft()
                    batch = None
                else:
                    batch = []
                    while (
                        self._queue
                        and len(batch) < self._max_batch
                        and not isinstance(self._queue[0], _Compact)
                    ):
                        batch.append(self._queue.popleft())
            if batch is None:
                self._run_compaction(op)
            else:
                self._commit(batch)

    def _commit(self, batch: list) -> None:
        data = b"".join(item[1] for item in batch) if len(batch) > 1 else batch[0][1]
        error: BaseException | None = self._error
        if error is None:
            members = list(self._fds)
            if self._mirror is not None and len(members) > 1:
                # one thread per extra member: the mirrors' write + fsync overlap (fsync
                # releases the GIL), so a commit takes the slowest member, not their sum
                jobs = [self._mirror.submit(self._write_sync, m, data) for m in members[1:]]
                self._write_sync(members[0], data)
                for job in jobs:
                    job.result()
            else:
                for m in members:
                    self._guard(m, self._f.write, self._fds[m], data)
                for m in list(self._fds):  # a member whose write failed is out already
                    self._guard(m, self._f.fsync, self._fds[m])
            error = self._error
        with self._cond:
            self._pending -= len(data)
            if error is None:
                self._used += len(data)
        self._active_size += len(data)
        for seq, _, done in batch:
            _resolve(done, seq, error)
        if error is None and self._active_size >= self._segment_bytes:
            self._roll()

    def _write_sync(self, m: str, data: bytes) -> None:
        """One member's share of a commit (on the writer or a mirror thread)."""
        fd = self._fds.get(m)
        if fd is not None:
            self._guard(m, self._f.write, fd, data)
        if m in self._fds:
            self._guard(m, self._f.fsync, fd)

    def _roll(self) -> None:
        """Seal the active segment and start the next; its name is durable before any ack."""
        name = _name(_num(self._names[-1]) + 1, SEG)
        for m in list(self._fds):
            self._close_fd(m)
            self._guard(m, self._create, m, name)
        self._names.append(name)
        self._active_size = 0

    def _create(self, m: str, name: str) -> None:
        self._fds[m] = self._f.open(os.path.join(m, name), truncate=True)
        self._f.fsync_dir(m)

    def _run_compaction(self, op: _Compact) -> None:
        if not op.future.set_running_or_notify_cancel():
            return
        try:
            op.future.set_result(self._compact(op.keep))
        except Exception as exc:  # the caller's predicate or an I/O error: report, keep serving
            op.future.set_exception(exc)

    def _compact(self, keep: Callable[[Record], bool]) -> int:
        if self._error is not None:
            raise self._error
        old = list(self._names)
        records: list[Record] = []
        after = -1
        for name in old:
            bufs = {m: self._read(m, name) for m in self._fds}
            recs, _, after, _ = self._merge(bufs, after, tail_ok=False)
            records += recs
        data = b"".join(encode(*r) for r in records if keep(r))
        cmp_num = _num(old[-1]) + 1
        cmp_name, active = _name(cmp_num, CMP), _name(cmp_num + 1, SEG)
        for m in list(self._fds):
            self._guard(m, self._write_file, m, cmp_name, data)
        for m in list(self._fds):
            self._close_fd(m)
            self._guard(m, self._create, m, active)
        for m in list(self._fds):
            for name in old:
                self._guard(m, self._f.remove, os.path.join(m, name))
            self._guard(m, self._f.fsync_dir, m)
        if self._error is not None:
            raise self._error
        self._names = [cmp_name, active]
        self._active_size = 0
        with self._cond:
            freed, self._used = self._used - len(data), len(data)
        return freed

    def _write_file(self, m: str, name: str, data: bytes) -> None:
        """Atomically (re)write one segment: temp file, fsync, rename, directory fsync."""
        tmp = os.path.join(m, name + TMP)
        fd = self._f.open(tmp, truncate=True)
        try:
            self._f.write(fd, data)
            self._f.fsync(fd)
        finally:
            self._f.close(fd)
        self._f.replace(tmp, os.path.join(m, name))
        self._f.fsync_dir(m)

    def _guard(self, m: str, fn: Callable, *args: object) -> None:
        """Run one member's I/O; an OSError takes that member out of the mirror."""
        try:
            fn(*args)
        except OSError as exc:
            self._fail(m, exc)

    def _fail(self, m: str, exc: OSError) -> None:
        _log.error("store member %s failed: %s", m, exc)
        h = self._health[m]
        h.failed = True
        h.write_errors += 1
        self._close_fd(m)
        if not self._fds:
            self._error = StoreClosed(f"every store member failed (last: {exc})")

    def _close_fd(self, m: str) -> None:
        fd = self._fds.pop(m, None)
        if fd is not None:
            try:
                self._f.close(fd)
            except OSError:
                pass

    # ------------------------------------------------------------------------------ recovery

    def _read(self, m: str, name: str) -> bytes | None:
        try:
            return self._f.read(os.path.join(m, name))
        except OSError as exc:
            self._fail(m, exc)
            return None

    def _recover(self) -> list[Record]:
        listings: dict[str, set[str]] = {}
        for m in self._members:
            try:
                self._f.makedirs(m)
                names = self._f.listdir(m)
                for n in names:
                    if n.endswith(TMP):  # an unfinished rewrite; the original is still there
                        self._f.remove(os.path.join(m, n))
            except OSError as exc:
                self._fail(m, exc)
                continue
            self._fds[m] = None  # healthy; the descriptor is opened by _open_active
            listings[m] = {n for n in names if _num(n) is not None}
        if not listings:
            raise StoreClosed("no usable store member")
        names = sorted(set().union(*listings.values()), key=lambda n: (_num(n), n))
        cmps = [_num(n) for n in names if n.endswith(CMP)]
        base = max(cmps, default=-1)
        for m in list(listings):
            stale = [n for n in listings[m] if _num(n) < base]
            for n in stale:
                self._guard(m, self._f.remove, os.path.join(m, n))
            if stale:
                self._guard(m, self._f.fsync_dir, m)
        records: list[Record] = []
        after, stop = -1, False
        live = [n for n in names if _num(n) >= base]
        for name in live:
            if stop:  # past an unrecoverable hole: keep the bytes aside, never serve them
                for m in listings:
                    if name in listings[m]:
                        self._health[m].lost_files += 1
                        self._guard(m, self._f.replace, os.path.join(m, name),
                                    os.path.join(m, name + LOST))
                continue
            bufs = {m: self._read(m, name) for m in listings if m in self._fds}
            recs, data, after, stop = self._merge(bufs, after, tail_ok=name == live[-1])
            records += recs
            self._repair(name, bufs, data)
            self._names.append(name)
            self._used += len(data)
            self._active_size = len(data)
        for m in list(self._fds):
            self._guard(m, self._f.fsync_dir, m)
        return records

    def _merge(
        self, bufs: dict[str, bytes | None], after: int, tail_ok: bool
    ) -> tuple[list[Record], bytes, int, bool]:
        """Walk one segment's copies record by record, taking each from a member where it is valid.

        A copy that merely stops short is torn (a crash between mirror writes) only at the tail of
        the log (``tail_ok``); anywhere else it lost committed records. Returns the records, the
        good bytes, the last seq, and whether bad bytes were left over.
        """
        present = {m: b for m, b in bufs.items() if b is not None}
        recs: list[Record] = []
        chunks: list[bytes] = []
        off = 0
        while True:
            hit = src = None
            for m, b in present.items():
                if (hit := decode_at(b, off, after)) is not None:
                    src = m
                    break
            if hit is None:
                break
            rec, end = hit
            chunk = present[src][off:end]
            for m, b in present.items():
                if b[off:end] != chunk:
                    h = self._health[m]
                    if tail_ok and len(b) < end and chunk.startswith(b[off:]):
                        h.torn_records += 1
                    else:
                        h.corrupt_records += 1
            recs.append(rec)
            chunks.append(chunk)
            after, off = rec.seq, end
        leftover = any(len(b) > off for b in present.values())
        return recs, b"".join(chunks), after, leftover

    def _repair(self, name: str, bufs: dict[str, bytes | None], data: bytes) -> None:
        """Make every member's copy of ``name`` exactly the good bytes (cut or rewrite)."""
        for m, b in bufs.items():
            if b == data or m not in self._fds:
                continue
            h = self._health[m]
            if b is not None and b[: len(data)] == data:
                h.truncated_bytes += len(b) - len(data)
                self._guard(m, self._f.truncate, os.path.join(m, name), len(data))
                continue
            if b is None and data:
                h.missing_files += 1
            h.repaired_files += 1
            self._guard(m, self._write_file, m, name, data)

    def _open_active(self) -> None:
        if not self._names:
            self._names.append(_name(1, SEG))
            for m in list(self._fds):
                self._guard(m, self._create, m, self._names[0])
        else:
            path = self._names[-1]
            for m in list(self._fds):
                self._guard(m, self._open_append, m, path)
        if self._error is not None:
            raise self._error

    def _open_append(self, m: str, name: str) -> None:
        self._fds[m] = self._f.open(os.path.join(m, name))


def _resolve(done: Future | Done, seq: int, error: BaseException | None) -> None:
    if isinstance(done, Future):
        if error is None:
            done.set_result(seq)
        else:
            done.set_exception(error)
        return
    try:
        done(seq, error)
    except Exception:  # a caller's callback must not stop the writer for everyone else
        _log.exception("store completion callback failed")
