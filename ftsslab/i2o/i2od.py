# SPDX-License-Identifier: GPL-2.0-or-later
"""The process of an `i2o-host` or `i2o-remote` node on veth: its core (``nodes``) in sanicd's
loop -- the port's packet ring, the monotonic clock, the control socket, the events file.
A host's devices are sparse files in the lab's directory. A remote with an ``nbd`` export
serves its disk on ``<lab dir>/<node>.blk`` (blockproto, ``export``) and runs nbdkit with the
ftsslab plugin on it, so real NBD clients reach the disk on ``<lab dir>/<node>.nbd``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from ftsslab.lab.veth.nodeargs import node_args
from ftsslab.san.sanicd import Sanicd

from .export import BlockExport
from .kinds import HOST, file_devices, host_core, remote_core
from .nbd import nbd_uri, nbdkit_command

NBDKIT_START = 20.0  # seconds nbdkit may take to create its socket


class ExportServer:
    """The blockproto side of a remote's export: a Unix stream socket in sanicd's loop."""

    def __init__(self, d: Sanicd, export: BlockExport, path: Path) -> None:
        self.d, self.export = d, export
        path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.clients: dict[int, socket.socket] = {}
        d.watch(self.listener.fileno(), self._accept)
        d.after_turn = self._flush

    def _accept(self) -> None:
        try:
            s, _ = self.listener.accept()
        except BlockingIOError:
            return
        fd = s.fileno()
        self.clients[fd] = s
        self.export.open(fd)
        self.d.watch(fd, lambda: self._read(fd))

    def _read(self, fd: int) -> None:
        s = self.clients[fd]
        try:
            data = s.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or not self.export.feed(fd, data):
            self._drop(fd)
        self.d.transmit(self.d.core.take_output())

    def _drop(self, fd: int) -> None:
        self.d.unwatch(fd)
        self.export.close(fd)
        self.clients.pop(fd).close()

    def _flush(self) -> None:
        self.export.pump()
        self.d.transmit(self.d.core.take_output())
        for fd, data in self.export.take().items():
            try:
                self.clients[fd].sendall(data)
            except OSError:
                self._drop(fd)


class I2od(Sanicd):
    """sanicd's loop, and a remote's NBD export: at start (the ``nbd`` option) or asked for
    on the control socket (``{"op": "export", "iop": ..., "device": ...}``, `ftsslab i2o
    export`). One export per node."""

    def __init__(self, core, lab_dir: str) -> None:
        super().__init__(core, lab_dir)
        self.lab = Path(lab_dir)
        self.exporting: str | None = None  # the NBD URI

    def _request(self, req: dict) -> dict:
        if req.get("op") != "export":
            return super()._request(req)
        if self.exporting is not None:
            return {"ok": False, "error": f"already exporting on {self.exporting}"}
        return {"ok": True, "uri": self.export(req["iop"], int(req.get("device", 0)))}

    def export(self, iop: str, device: int) -> str:
        """Connect to ``iop``, serve its disk on blockproto, run nbdkit on it: the NBD URI."""
        name = self.core.cfg.name
        self.transmit(self.core.verb({"op": "connect", "iop": iop}, time.monotonic()))
        blk = self.lab / f"{name}.blk"
        ExportServer(self, BlockExport(self.core, iop, device), blk)
        nbd = self.lab / f"{name}.nbd"
        nbd.unlink(missing_ok=True)
        proc = subprocess.Popen(nbdkit_command(blk, unix=nbd), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + NBDKIT_START
        while not nbd.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nbdkit did not start (exit {proc.poll()})")
            time.sleep(0.02)
        self.exporting = nbd_uri(unix=nbd)
        return self.exporting


def main(argv: list[str] | None = None) -> int:
    a = node_args(__doc__.splitlines()[0], argv)
    node, scenario, now = a.node, a.scenario, time.monotonic()
    if node.kind == HOST:
        core = host_core(node, scenario, file_devices(str(a.state), node.name,
                                                      node.options["block_size"]), now)
    else:
        core = remote_core(node, scenario, now)
    d = I2od(core, str(a.state))
    nbd = node.options.get("nbd") if node.kind != HOST else None
    if nbd is not None:
        d.export(nbd["iop"], nbd.get("device", 0))
    a.ready()
    d.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
