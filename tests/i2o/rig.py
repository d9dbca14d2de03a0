"""A host with IOPs on an emulated bus, their block devices on tmp files, for the i2o tests."""

from __future__ import annotations

import os
from pathlib import Path

from ftsslab.fast import i2o as fast
from ftsslab.i2o.blockdev import FileBlockDevice
from ftsslab.i2o.bus import HostMemory, LocalBus
from ftsslab.i2o.ddm import Ddm
from ftsslab.i2o.frames import FIRST_DEVICE_TID
from ftsslab.i2o.host import HostDriverModule
from ftsslab.i2o.iop import Iop

CAPACITY = 1 << 20
TID = FIRST_DEVICE_TID


class Rig:
    def __init__(self, tmp: Path, iops: int = 2, devices: int = 2, *, fsync=os.fsync,
                 private: frozenset[int] = frozenset(), allowed=None,
                 initialise: bool = True) -> None:
        self.memory = HostMemory(1 << 20)
        self.bus = LocalBus(self.memory)
        self.devices = [[FileBlockDevice(tmp / f"p{i}d{j}.img", CAPACITY, fsync=fsync)
                         for j in range(devices)] for i in range(iops)]
        for devs in self.devices:
            self.bus.attach(Iop(Ddm(devs, self.memory)))
        self.host = HostDriverModule(self.bus, private=private, allowed=allowed)
        self.lt, self.rt, self.cm = self.host.lt, self.host.rt, self.host.cm
        if initialise:
            self.host.initialise()

    def run(self) -> list:
        """Let the IOPs work, then the LT's poll: the actions that come out."""
        self.bus.service()
        return self.lt.poll()


def write(lba: int, length: int, address: int, *, tid: int = TID, ictx: int = 0,
          tctx: int = 0, control_flags: int = 0) -> bytes:
    return fast.build_block_rw(fast.I2O_BSA_BLOCK_WRITE, [fast.sge_simple(length, address)], lba,
                               target_tid=tid, initiator_context=ictx,
                               transaction_context=tctx, control_flags=control_flags)


def read(lba: int, length: int, address: int, *, tid: int = TID, ictx: int = 0,
         tctx: int = 0) -> bytes:
    return fast.build_block_rw(fast.I2O_BSA_BLOCK_READ, [fast.sge_simple(length, address)], lba,
                               target_tid=tid, initiator_context=ictx, transaction_context=tctx)


def flush(*, tid: int = TID, ictx: int = 0, tctx: int = 0) -> bytes:
    return fast.build_i2o(fast.I2O_BSA_CACHE_FLUSH, b"\x00\x00\x01\x00", target_tid=tid,
                          initiator_context=ictx, transaction_context=tctx)
