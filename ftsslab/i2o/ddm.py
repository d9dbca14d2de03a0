# SPDX-License-Identifier: GPL-2.0-or-later
"""The device driver module (DDM 322, L180): block storage class requests on its devices.

A DDM owns block devices by TID and moves data by DMA through ``Dma``: the SGL's simple
elements address the host memory the IOP reaches over the bus (``bus.HostMemory``). The
remote-buffer element (0x34, data by RDMA under seed 003's RKeys) has no DMA engine yet and
fails the request without touching the device. Every request gets one reply with an I2O
status: SUCCESS with TransferCount, or ERROR_NO_DATA_TRANSFER with a BSA detailed status and
the failing byte address.
"""

from __future__ import annotations

from typing import Protocol

from ftsslab.fast import i2o as fast

from .blockdev import BlockDevice
from .frames import (
    BSA_DSC_ACCESS_ERROR,
    BSA_WRITE_THRU,
    DSC_UNSUPPORTED_FUNCTION,
    FIRST_DEVICE_TID,
    REQ_SUCCESS,
    Request,
    error_reply,
    reply,
)


class DmaError(Exception):
    """An SGL element the DMA engine cannot serve (outside memory, or a kind it has no path
    for)."""


class Dma(Protocol):
    def gather(self, sgl: list[dict], length: int) -> bytes: ...

    def scatter(self, sgl: list[dict], data: bytes) -> None: ...


class Ddm:
    def __init__(self, devices: list[BlockDevice], dma: Dma) -> None:
        self.devices: dict[int, BlockDevice] = {FIRST_DEVICE_TID + i: d
                                                for i, d in enumerate(devices)}
        self._dma = dma
        self.requests = 0  # per-IOP counter (check 8)

    def handle(self, request: Request) -> bytes:
        """One BSA request to one of this DDM's TIDs (the IOP checked the TID)."""
        self.requests += 1
        device = self.devices[request.target_tid]
        f = request.fields
        if request.function == fast.I2O_BSA_CACHE_FLUSH:
            device.flush()
            return reply(request, REQ_SUCCESS, transfer_count=0)
        if request.function not in (fast.I2O_BSA_BLOCK_READ, fast.I2O_BSA_BLOCK_WRITE):
            return error_reply(request, DSC_UNSUPPORTED_FUNCTION)
        offset, length = f["byte_address"], f["byte_count"]
        if offset + length > device.capacity:
            return error_reply(request, BSA_DSC_ACCESS_ERROR)
        try:
            if request.function == fast.I2O_BSA_BLOCK_READ:
                self._dma.scatter(f["sgl"], device.read(offset, length))
            else:
                device.write(offset, self._dma.gather(f["sgl"], length))
                if f["control_flags"] & BSA_WRITE_THRU:
                    device.flush()
        except DmaError:
            return error_reply(request, BSA_DSC_ACCESS_ERROR)
        return reply(request, REQ_SUCCESS, transfer_count=length)
