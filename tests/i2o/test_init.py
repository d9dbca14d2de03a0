"""Claim 19's initialisation as a traced sequence and the descriptors it builds (check 1)."""

from __future__ import annotations

import pytest

from ftsslab.i2o.iop import IopState
from ftsslab.i2o.local_transport import INIT_SEQUENCE, IopContext

from .rig import CAPACITY, TID, Rig


@pytest.mark.parametrize("iops", [0, 2, 3])
def test_claim_19_order(tmp_path, iops):
    rig = Rig(tmp_path, iops)
    t = rig.host.trace
    expected = (["scan"] + ["exec"] * (len(INIT_SEQUENCE) * iops) + ["listen", "query"]
                + ["descriptor"] * iops + ["management channel open", "waiting"])
    assert [e.step for e in t] == expected
    assert t[0].detail == {"found": iops}
    assert [e.detail["function"] for e in t if e.step == "exec"] == list(INIT_SEQUENCE) * iops
    assert all(e.detail["ok"] for e in t if e.step == "exec")
    assert next(e for e in t if e.step == "query").detail == {"count": iops}
    assert [rig.bus.iop(s).state for s in rig.bus.scan()] == [IopState.OPERATIONAL] * iops


def test_descriptors_hold_the_lt_handler_and_its_contexts(tmp_path):
    rig = Rig(tmp_path)
    contexts = rig.lt.contexts()
    assert [d.iop_context for d in rig.cm.descriptors.values()] == list(contexts)
    for d in rig.cm.descriptors.values():
        assert d.send_handler == rig.lt.send_handler and d.send_handler.__self__ is rig.lt
        assert d.send_handler.__func__ is type(rig.lt).send_handler
    assert list(rig.cm.descriptors) == [2, 3]  # IOP ids the LT assigned by ExecSysTabSet
    assert [rig.bus.iop(s).iop_id for s in rig.bus.scan()] == [2, 3]


def test_the_iop_context_is_opaque(tmp_path):
    ctx = Rig(tmp_path).lt.contexts()[0]
    assert isinstance(ctx, IopContext)
    assert [a for a in dir(ctx) if not a.startswith("_")] == []
    with pytest.raises(AttributeError):
        ctx.anything = 1


def test_advertisement_lists_the_iops_and_their_tids(tmp_path):
    rig = Rig(tmp_path, 3, private=frozenset({3}))
    ads = rig.cm.advertisement()
    assert [a.iop_id for a in ads] == [2, 4]
    assert all([d.tid for d in a.devices] == [TID, TID + 1] for a in ads)
    assert all(d.capacity == CAPACITY for a in ads for d in a.devices)
