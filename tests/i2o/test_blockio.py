"""BSA BlockWrite / BlockRead / CacheFlush through the LT's send handler to a DDM whose
devices are tmp files: bytes on disk, fsync on flush and write-through, the I2O statuses."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.fast import i2o as fast
from ftsslab.i2o.blockdev import FileBlockDevice
from ftsslab.i2o.frames import BSA_WRITE_THRU, parse_reply

from .rig import CAPACITY, TID, Rig, flush, read, write


class CountingFsync:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        os.fsync(fd)


def post(rig: Rig, frame: bytes, iop: int = 0) -> list:
    """Post straight to the IOP through the LT (no callback: the replies come back raw)."""
    assert rig.lt.send_handler(rig.lt.contexts()[iop], frame)
    rig.bus.service()
    return [parse_reply(f) for f in rig.bus.take(iop)]


def test_write_then_read_round_trip_lands_on_disk(tmp_path):
    rig = Rig(tmp_path)
    data = os.urandom(4096)
    rig.memory.data[0x1000:0x2000] = data
    (r,) = post(rig, write(0x3000, 4096, 0x1000, ictx=5, tctx=6), iop=1)
    assert (r.req_status, r.initiator_context) == (0, 5)
    assert (tmp_path / "p1d0.img").read_bytes()[0x3000:0x4000] == data
    assert (tmp_path / "p0d0.img").read_bytes() == bytes(CAPACITY)  # the other IOP untouched
    (r,) = post(rig, read(0x3000, 4096, 0x8000), iop=1)
    assert r.req_status == 0
    assert bytes(rig.memory.data[0x8000:0x9000]) == data


def test_the_reply_reports_the_transfer_count(tmp_path):
    rig = Rig(tmp_path, 1)
    assert rig.lt.send_handler(rig.lt.contexts()[0], read(0, 512, 0))
    rig.bus.service()
    (frame,) = rig.bus.take(0)
    out = fast.parse_i2o(frame)
    assert out["layers"] == ["I2OReply", "I2OBlockReply"]
    assert out["transfer_count"] == 512


def test_device_files_are_sparse(tmp_path):
    Rig(tmp_path, 1)
    st_ = os.stat(tmp_path / "p0d0.img")
    assert st_.st_size == CAPACITY and st_.st_blocks * 512 < CAPACITY


def test_cache_flush_and_write_through_fsync(tmp_path):
    fsync = CountingFsync()
    rig = Rig(tmp_path, 1, fsync=fsync)
    post(rig, write(0, 512, 0))
    assert fsync.calls == 0  # a cached write
    (r,) = post(rig, flush())
    assert (r.req_status, fsync.calls) == (0, 1)
    post(rig, write(0, 512, 0, control_flags=BSA_WRITE_THRU))
    assert fsync.calls == 2
    post(rig, flush(tid=TID + 1))
    assert fsync.calls == 3


@pytest.mark.parametrize("frame, dsc", [
    (write(CAPACITY - 256, 512, 0), 0x02),  # past the end of the device
    (read(0, 512, (1 << 20) - 256), 0x02),  # outside host memory
    (fast.build_block_rw(fast.I2O_BSA_BLOCK_WRITE, [fast.sge_remote(512, 0x1000, 0x77)], 0,
                         target_tid=TID), 0x02),  # remote buffer: no RDMA yet
    (fast.build_i2o(0x35, b"\0" * 16, target_tid=TID), 0x0A),  # BsaMediaVerify: unsupported
    (fast.build_i2o(0x06, b"", target_tid=TID), 0x0A),  # UtilParamsGet: not a BSA function
])
def test_refused_requests_change_no_byte(tmp_path, frame, dsc):
    rig = Rig(tmp_path, 1)
    rig.memory.data[:] = b"\xAA" * len(rig.memory.data)
    (r,) = post(rig, frame)
    assert (r.req_status, r.detailed_status) == (0x05, dsc)
    assert (tmp_path / "p0d0.img").read_bytes() == bytes(CAPACITY)


def test_unknown_tid_is_refused_device_not_available(tmp_path):
    rig = Rig(tmp_path, 1)
    (r,) = post(rig, write(0, 512, 0, tid=TID + 2))
    assert (r.req_status, r.detailed_status) == (0x05, 0x1C)


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 63), st.integers(1, 8), st.binary(min_size=1,
                                                                             max_size=1))))
def test_device_equals_a_model(tmp_path_factory, ops):
    tmp = tmp_path_factory.mktemp("dev")
    dev = FileBlockDevice(tmp / "d.img", 64 * 512)
    model = bytearray(64 * 512)
    for block, count, fill in ops:
        count = min(count, 64 - block)
        dev.write(block * 512, fill * (count * 512))
        model[block * 512:(block + count) * 512] = fill * (count * 512)
    assert dev.read(0, len(model)) == bytes(model)
    dev.close()
