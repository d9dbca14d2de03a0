"""The FTSS store: log format, group commit, RAID 1 mirror, recovery, compaction, capacity."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.ftss.log import HEADER_SIZE, OsFiles, Record, decode_at, encode, scan
from ftsslab.ftss.store import Store, StoreClosed, StoreFull


class CountingFiles(OsFiles):
    """The real file layer, counting fsyncs and failing writes on chosen members."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.broken: set[str] = set()
        self._paths: dict[int, str] = {}

    def open(self, path: str, truncate: bool = False) -> int:
        fd = super().open(path, truncate)
        self._paths[fd] = path
        return fd

    def write(self, fd: int, data: bytes) -> None:
        if any(self._paths[fd].startswith(b) for b in self.broken):
            raise OSError(5, "injected I/O error")
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)


def members(tmp: Path, n: int = 2) -> list[str]:
    return [str(tmp / f"m{i}") for i in range(n)]


def segments(member: str) -> list[str]:
    return sorted(os.path.join(member, n) for n in os.listdir(member))


def test_codec_round_trip_and_rejects_every_single_bit_flip() -> None:
    raw = encode(7, 3, 2**64 - 1, b"payload")
    assert decode_at(raw, 0) == (Record(7, 3, 2**64 - 1, b"payload"), len(raw))
    assert decode_at(raw, 0, after_seq=7) is None  # seqs only grow
    for bit in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert decode_at(bytes(bad), 0) is None


def test_submit_resolves_to_seq_and_everything_recovers_in_order(tmp_path: Path) -> None:
    ms = members(tmp_path)
    with Store(ms, segment_bytes=2048) as store:
        seqs = [store.submit(1, i, b"p%d" % i).result(timeout=10) for i in range(200)]
    assert seqs == list(range(1, 201))
    assert len(segments(ms[0])) > 1  # segments rolled
    with Store(ms) as store:
        assert [(r.seq, r.key, r.payload) for r in store.recovered] == [
            (i + 1, i, b"p%d" % i) for i in range(200)
        ]
        assert store.submit(0, 0, b"").result(timeout=10) == 201
        assert all(h["ok"] for h in store.health().values())


def test_group_commit_one_fsync_per_member_for_many_producers(tmp_path: Path) -> None:
    files = CountingFiles()
    store = Store(members(tmp_path), files=files)
    files.fsyncs = 0
    store.submit(1, 1, b"lone").result(timeout=10)
    assert files.fsyncs == 2  # a lone record: exactly one round of fsyncs, nothing waits for more
    files.fsyncs = 0
    per_thread, nthreads = 200, 16
    acked: list[int] = []

    def produce(t: int) -> None:
        for i in range(per_thread):
            acked.append(store.submit(2, t * per_thread + i, b"x").result(timeout=30))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    total = per_thread * nthreads
    assert sorted(acked) == list(range(2, total + 2))
    assert files.fsyncs < total  # batches formed: far fewer fsyncs than records
    with Store(members(tmp_path)) as again:
        assert sorted(r.key for r in again.recovered[1:]) == list(range(total))


def test_max_batch_one_is_fsync_per_record(tmp_path: Path) -> None:
    files = CountingFiles()
    store = Store(members(tmp_path), files=files, max_batch=1)
    files.fsyncs = 0
    futs = [store.submit(1, i, b"x") for i in range(50)]
    store.close()
    assert all(f.done() for f in futs)
    assert files.fsyncs == 100


def test_close_drains_and_callbacks_run(tmp_path: Path) -> None:
    store = Store(members(tmp_path))
    seen: list[tuple[int, object]] = []
    futs = [store.submit(1, i, b"x" * 100) for i in range(300)]
    seqs = [store.submit_cb(1, 1000 + i, b"y", lambda s, e: seen.append((s, e))) for i in range(5)]
    store.close()
    assert all(f.done() and f.exception() is None for f in futs)
    assert seen == [(s, None) for s in seqs]
    with pytest.raises(StoreClosed):
        store.submit(1, 1, b"late")


def test_rejects_out_of_range_fields(tmp_path: Path) -> None:
    with Store(members(tmp_path, 1)) as store:
        for kind, key in ((256, 0), (-1, 0), (0, 2**64), (0, -1)):
            with pytest.raises(ValueError):
                store.submit(kind, key, b"")


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_file", "delete_member"])
def test_raid1_serves_from_the_good_member_and_repairs_the_bad(tmp_path: Path, damage: str) -> None:
    ms = members(tmp_path)
    with Store(ms, segment_bytes=4096) as store:
        for i in range(300):
            store.submit(1, i, b"data-%d" % i).result(timeout=10)
    assert len(segments(ms[0])) > 2
    victim = segments(ms[0])[1]
    if damage == "flip":
        raw = bytearray(Path(victim).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        Path(victim).write_bytes(bytes(raw))
    elif damage == "truncate":
        os.truncate(victim, 10)
    elif damage == "delete_file":
        os.remove(victim)
    else:
        for p in segments(ms[0]):
            os.remove(p)
        os.rmdir(ms[0])
    with Store(ms) as store:
        assert [r.key for r in store.recovered] == list(range(300))
        health = store.health()
        assert not health[ms[0]]["ok"] and health[ms[0]]["repaired_files"] >= 1
        assert health[ms[1]]["ok"] and health[ms[1]]["repaired_files"] == 0
    for a, b in zip(segments(ms[0]), segments(ms[1]), strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()  # the mirror is whole again
    with Store([ms[0]]) as alone:  # and the repaired member alone holds everything
        assert [r.key for r in alone.recovered] == list(range(300))


def test_damage_on_both_members_at_different_records_still_recovers_all(tmp_path: Path) -> None:
    ms = members(tmp_path)
    with Store(ms) as store:
        for i in range(100):
            store.submit(1, i, b"r%03d" % i)
    (seg0,), (seg1,) = segments(ms[0]), segments(ms[1])
    rec = len(encode(1, 1, 0, b"r000"))
    for path, index in ((seg0, 10), (seg1, 60)):
        raw = bytearray(Path(path).read_bytes())
        raw[index * rec + HEADER_SIZE] ^= 0x01
        Path(path).write_bytes(bytes(raw))
    with Store(ms) as store:
        assert [r.key for r in store.recovered] == list(range(100))
        assert all(h["corrupt_records"] == 1 for h in store.health().values())


def test_runtime_member_failure_degrades_then_fails(tmp_path: Path) -> None:
    files = CountingFiles()
    ms = members(tmp_path)
    store = Store(ms, files=files)
    files.broken.add(ms[0])
    assert store.submit(1, 1, b"still mirrored once").result(timeout=10) == 1
    assert store.health()[ms[0]]["failed"] and store.health()[ms[1]]["ok"]
    files.broken.add(ms[1])
    with pytest.raises(StoreClosed):
        store.submit(1, 2, b"nowhere").result(timeout=10)
    with pytest.raises(StoreClosed):
        store.submit(1, 3, b"refused")
    store.close()
    with Store(ms) as again:
        assert [r.payload for r in again.recovered] == [b"still mirrored once"]


def test_torn_tail_is_cut_and_appends_continue(tmp_path: Path) -> None:
    ms = members(tmp_path)
    with Store(ms) as store:
        for i in range(10):
            store.submit(1, i, b"v")
    for m in ms:
        with open(segments(m)[-1], "ab") as f:
            f.write(encode(11, 1, 10, b"v")[:-3])  # a record torn mid-payload
    with Store(ms) as store:
        assert [r.key for r in store.recovered] == list(range(10))
        assert store.submit(1, 10, b"v").result(timeout=10) == 11
    with Store(ms) as store:
        assert [r.key for r in store.recovered] == list(range(11))


def test_capacity_raises_store_full_and_compaction_frees_it(tmp_path: Path) -> None:
    size = len(encode(1, 1, 1, b"x" * 50))
    with Store(members(tmp_path), capacity_bytes=size * 10) as store:
        futs = [store.submit(1, i, b"x" * 50) for i in range(10)]
        with pytest.raises(StoreFull):
            store.submit(1, 99, b"x" * 50)
        assert [f.result(timeout=10) for f in futs] == list(range(1, 11))
        assert store.compact(lambda r: r.key >= 5).result(timeout=10) == size * 5
        assert store.used_bytes == size * 5
        store.submit(1, 10, b"x" * 50).result(timeout=10)
    with Store(members(tmp_path)) as store:
        assert [r.key for r in store.recovered] == [5, 6, 7, 8, 9, 10]


def test_interrupted_compaction_either_way_loses_nothing(tmp_path: Path) -> None:
    ms = members(tmp_path)
    with Store(ms, segment_bytes=512) as store:
        for i in range(40):
            store.submit(1, i, b"k" * 20)
    snapshot = {p: Path(p).read_bytes() for m in ms for p in segments(m)}
    with Store(ms) as store:
        store.compact(lambda r: r.key % 2 == 0).result(timeout=10)
    # Crash before the old segments were removed: they reappear next to the .cmp file.
    for p, raw in snapshot.items():
        Path(p).write_bytes(raw)
    Path(ms[0], "0000000999.seg.tmp").write_bytes(b"half a rewrite")
    with Store(ms) as store:
        assert [r.key for r in store.recovered] == list(range(0, 40, 2))
    assert not any(n.endswith(".tmp") for n in os.listdir(ms[0]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    junk=st.binary(max_size=300),
    where=st.floats(min_value=0, max_value=1),
    overwrite=st.booleans(),
)
def test_arbitrary_bytes_never_make_recovery_raise(
    tmp_path_factory: pytest.TempPathFactory, junk: bytes, where: float, overwrite: bool
) -> None:
    base = tmp_path_factory.mktemp("junk")
    ms = members(base)
    originals = [encode(i + 1, 1, i, b"%d" % i) for i in range(20)]
    for m in ms:
        os.makedirs(m)
        raw = bytearray(b"".join(originals))
        at = int(where * len(raw))
        if overwrite:
            raw[at : at + len(junk)] = junk
        else:
            raw += junk
        Path(m, "0000000001.seg").write_bytes(bytes(raw))
    with Store(ms) as store:
        got = [encode(*r) for r in store.recovered]
        assert got == originals[: len(got)]  # a prefix of what was written, never garbage
        store.submit(1, 100, b"after").result(timeout=10)
    with Store(ms) as store:
        assert store.recovered[-1].payload == b"after"


@given(st.binary(max_size=400))
def test_scan_never_raises(raw: bytes) -> None:
    recs, end = scan(raw)
    assert 0 <= end <= len(raw) and all(isinstance(r, Record) for r in recs)
