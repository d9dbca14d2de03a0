# SPDX-License-Identifier: GPL-2.0-or-later
"""The host driver module 310 (the IOP access module, claim 1): the three parts wired
together, and their initialisation in claim 19's order (L188)."""

from __future__ import annotations

from collections.abc import Mapping

from .bus import LocalBus
from .connection_manager import ConnectionManager
from .context import CallbackTable
from .local_transport import LocalTransport
from .remote_transport import RemoteTransport
from .trace import Trace


class HostDriverModule:
    def __init__(self, bus: LocalBus, *, private: frozenset[int] = frozenset(),
                 allowed: Mapping[int, frozenset[str]] | None = None,
                 trace: Trace | None = None) -> None:
        self.trace = Trace() if trace is None else trace
        self.callbacks = CallbackTable()
        self.lt = LocalTransport(bus, self.callbacks, self.trace)
        self.rt = RemoteTransport(self.callbacks, self.trace)
        self.cm = ConnectionManager(self.lt, self.rt, self.trace, private=private,
                                    allowed=allowed)
        self.lt.on_iop_failed = self.cm.iop_failed
        self.lt.on_iop_ready = self.cm.iop_ready

    def initialise(self) -> None:
        """LT scans the bus and initialises the IOPs; RT prepares to accept; CM queries the
        count, builds the descriptors and opens the management channel (claim 19)."""
        self.lt.scan()
        self.rt.listen()
        self.cm.start()
