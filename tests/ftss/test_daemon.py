"""The veth daemon's durability glue, on a real store: what a restarted node gets back.

A bug here loses acknowledged packets after a restart, and only the root integration
tests used to reach it: records of a turn go to the store together, forgotten ids in one
tombstone, compaction keeps exactly the live records, and ``recovered_live`` hands a
restarted core what no tombstone forgot -- also a record id reused after a restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ftsslab.ftss import daemon
from ftsslab.ftss.actions import Forget, Persist
from ftsslab.ftss.daemon import NodeProcess, recovered_live
from ftsslab.ftss.store import Store


class Recorder:
    """A core that only hears what the driver tells it."""

    def __init__(self):
        self.durable: list[int] = []
        self.failed: list[int] = []

    def on_durable(self, rid, now):
        self.durable.append(rid)
        return []

    def on_persist_failed(self, rid, now):
        self.failed.append(rid)
        return []

    def on_port(self, port, up, now):
        return []

    def next_deadline(self):
        return None


def node(tmp_path: Path, **store_kw) -> tuple[NodeProcess, Recorder]:
    core = Recorder()
    store = Store([tmp_path / "m0", tmp_path / "m1"], **store_kw)
    return NodeProcess(core, [], store), core


def settle(proc: NodeProcess, core: Recorder, count: int) -> None:
    """Wait (bounded) for ``count`` fsync completions, then hand them to the core."""
    deadline = time.monotonic() + 30
    while len(core.durable) + len(core.failed) < count:
        assert time.monotonic() < deadline, "the store never completed"
        time.sleep(0.005)
        proc._drain_durable()


def restart(tmp_path: Path) -> dict[int, tuple[int, int, bytes]]:
    with Store([tmp_path / "m0", tmp_path / "m1"]) as again:
        return {rid: (kind, payload) for rid, kind, payload in recovered_live(again).values()}


def test_a_turn_is_one_submission_and_its_forgets_one_tombstone(tmp_path):
    proc, core = node(tmp_path)
    proc.run_actions([Persist(1, 1, b"a"), Persist(2, 1, b"b"), Persist(3, 1, b"c")])
    assert proc._persists and not core.durable  # nothing reaches the store mid-turn
    proc.flush_store()
    settle(proc, core, 3)
    assert sorted(core.durable) == [1, 2, 3]
    proc.run_actions([Forget(1), Forget(3), Persist(4, 1, b"d")])
    proc.flush_store()
    settle(proc, core, 4)
    proc.store.close()
    tombstones = [r for r in Store([tmp_path / "m0"]).recovered if r.kind == daemon.REC_FORGET]
    assert len(tombstones) == 1 and len(tombstones[0].payload) == 16
    assert restart(tmp_path) == {2: (1, b"b"), 4: (1, b"d")}


def test_a_forgotten_id_reused_after_a_restart_is_live_again(tmp_path):
    proc, core = node(tmp_path)
    proc.run_actions([Persist(7, 1, b"first life")])
    proc.flush_store()
    settle(proc, core, 1)
    proc.run_actions([Forget(7)])
    proc.flush_store()
    proc.store.close()
    proc, core = node(tmp_path)  # the restarted core numbers from where recovery left it
    proc.run_actions([Persist(7, 1, b"second life")])
    proc.flush_store()
    settle(proc, core, 1)
    proc.store.close()
    assert restart(tmp_path) == {7: (1, b"second life")}


def test_compaction_keeps_exactly_the_live_records(tmp_path, monkeypatch):
    monkeypatch.setattr(daemon, "COMPACT_EVERY", 50)
    proc, core = node(tmp_path, segment_bytes=4096)
    for rid in range(1, 201):
        proc.run_actions([Persist(rid, 1, b"%d" % rid)] +
                         ([Forget(rid - 1)] if rid % 2 == 0 else []))
        proc.flush_store()
    settle(proc, core, 200)
    assert proc.tombstones >= daemon.COMPACT_EVERY
    proc.tombstones = 0
    live = dict(proc.live)
    freed = proc.store.compact(lambda r: live.get(r.key) == r.seq).result(timeout=30)
    assert freed > 0
    proc.store.close()
    expected = {rid: (1, b"%d" % rid) for rid in range(1, 201) if rid % 2 == 0}
    assert restart(tmp_path) == expected


def test_a_record_the_store_refuses_is_answered_not_lost(tmp_path):
    proc, core = node(tmp_path, capacity_bytes=200)
    proc.run_actions([Persist(1, 1, b"x" * 100), Persist(2, 1, b"y" * 100)])
    proc.flush_store()
    settle(proc, core, 2)
    assert core.durable == [1] and core.failed == [2]
    assert proc.internal_errors == 0


def test_a_record_nothing_waits_for_is_told_of_only_when_it_fails(tmp_path):
    """A unit's seen keys: the commit costs the loop no turn, a refusal is still answered."""
    proc, core = node(tmp_path, capacity_bytes=300)
    proc.run_actions([Persist(1, 1, b"x" * 100, awaited=False), Persist(2, 1, b"y" * 100),
                      Persist(3, 1, b"z" * 200, awaited=False)])
    proc.flush_store()
    settle(proc, core, 2)
    assert core.durable == [2] and core.failed == [3]
    proc.store.close()
    assert restart(tmp_path) == {1: (1, b"x" * 100), 2: (1, b"y" * 100)}


@pytest.mark.parametrize("size", [0, 7, 9, 24])
def test_a_damaged_tombstone_forgets_only_whole_ids(tmp_path, size):
    """A tombstone payload that is not a multiple of 8 bytes is read up to its last whole
    id (the store's CRC passed it; this is defence in depth, not a format)."""
    with Store([tmp_path / "m0"]) as store:
        store.submit(1, 1, b"keep").result(timeout=10)
        store.submit(daemon.REC_FORGET, 0, bytes(size)).result(timeout=10)
    with Store([tmp_path / "m0"]) as again:
        live = recovered_live(again)
    assert [rid for rid, _, _ in live.values()] == [1]
