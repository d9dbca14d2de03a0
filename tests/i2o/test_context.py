"""The context swap's callback table (D1.2, D1.3): generation-checked handles, stale and forged
contexts dropped and counted (check 10), and two remotes using identical contexts never
getting each other's replies (check 7)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.fast import i2o as fast
from ftsslab.i2o.context import INDEX_BITS, CallbackTable
from ftsslab.i2o.frames import parse_request

from .rig import TID, Rig, read, write

REQUEST = parse_request(write(0, 512, 0))


def test_handles_name_one_object_once():
    table = CallbackTable()
    a = table.alloc(print, "conn", REQUEST)
    assert table.lookup(a.handle) is a and a.handle >> INDEX_BITS == 1
    table.free(a)
    table.free(a)  # twice: harmless
    b = table.alloc(print, "conn", REQUEST)
    assert b.handle & 0xFFFF == a.handle & 0xFFFF and b.handle != a.handle  # same slot
    assert table.lookup(a.handle) is None and table.stale == 1
    assert table.lookup(b.handle) is b and len(table) == 1


@given(st.integers(0, 0xFFFFFFFF))
def test_a_forged_handle_names_nothing(handle):
    table = CallbackTable()
    live = [table.alloc(print, "c", REQUEST) for _ in range(4)]
    cb = table.lookup(handle)
    assert cb is (next((c for c in live if c.handle == handle), None))
    assert table.stale == (cb is None)


def test_generations_wrap_without_zero():
    table = CallbackTable()
    seen = set()
    for _ in range(70000):
        cb = table.alloc(print, "c", REQUEST)
        assert cb.handle >> INDEX_BITS != 0
        seen.add(cb.handle)
        table.free(cb)
    assert len(seen) == 0xFFFF  # every generation of slot 0 but 0


def test_stale_and_forged_replies_are_dropped_and_counted(tmp_path):
    rig = Rig(tmp_path)
    rig.cm.connect("R1", 3, 100)
    rig.rt.receive_handler(100, write(0, 512, 0, ictx=1))
    (cb,) = rig.host.callbacks.live()
    rig.bus.service()
    (reply,) = rig.bus.take(1)
    assert len(rig.lt.outbound_handler(reply)) == 1
    assert rig.lt.outbound_handler(reply) == []  # the same reply again: stale
    forged = fast.build_reply({**fast.parse_i2o(reply), "initiator_context": cb.handle ^ 0x10000})
    assert rig.lt.outbound_handler(forged) == []
    assert rig.lt.outbound_handler(b"\x01\x80" + b"\xff" * 30) == []  # no frame at all
    assert (rig.host.callbacks.stale, rig.lt.dropped) == (2, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.sampled_from(["R1", "R2"]), st.integers(0, 2)),
                          st.just("run")), max_size=60))
def test_identical_contexts_never_cross(tmp_path_factory, schedule):
    """R1 writes and R2 reads on the same IOP with the same InitiatorContext and
    TransactionContext values: the reply's function tells whose request it answers."""
    rig = Rig(tmp_path_factory.mktemp("x"))
    conns = {"R1": 100, "R2": 200}
    for remote, conn in conns.items():
        rig.cm.connect(remote, 3, conn)
    sent = {100: [], 200: []}
    got = {100: [], 200: []}
    for step in [*schedule, "run"]:
        if step == "run":
            for conn, frame, _ in rig.run():
                out = fast.parse_i2o(frame)
                got[conn].append((out["function"], out["initiator_context"],
                                  out["transaction_context"], out["req_status"]))
            continue
        remote, ctx = step
        conn = conns[remote]
        frame = (write if remote == "R1" else read)(0, 512, 0, ictx=ctx, tctx=ctx, tid=TID)
        assert rig.rt.receive_handler(conn, frame) == []
        sent[conn].append((0x31 if remote == "R1" else 0x30, ctx, ctx, 0))
    assert got == sent  # in order, each to its own connection
    assert len(rig.host.callbacks) == 0
