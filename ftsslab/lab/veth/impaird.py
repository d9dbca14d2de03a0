"""The impairment shim of one link: ``python -m ftsslab.lab.veth.impaird <lab dir>/link-N.json``.

On veth an impaired link is two veth pairs, ``A:ifA <-> a0`` and ``b0 <-> B:ifB``, with a0 and
b0 in the link's own namespace ``fl<id>-link-N``. This process, in that namespace, forwards
every frame between a0 and b0 through ``impair.Direction`` -- the sim's decisions, from the
same seeds -- and holds each delayed copy until it is due. ``rate`` is a tbf qdisc on the
shim's egress veth of that direction (the backend sets it with tc); a frame tbf refuses
(ENOBUFS) is lost to its full queue, one sent while the backend says the link is down is lost
to it.

The shim is its link's capture point too: each frame, once its fate is settled (sent, or
lost), goes as one record (``REC`` + the frame) to every client of ``<lab dir>/link-N.cap``
(the backend's capture), with the kernel's receive time of the frame at the shim -- the time
it entered the link -- and what the link did to it. Without a client nothing is recorded.

Control (``control.py``'s datagram protocol, ``<lab dir>/link-N.ctl``):
``{"op": "set", "impair": [a, b]}`` (``model.Impairment`` fields of each direction),
``{"op": "link", "up": bool}``, ``{"op": "stats"}``.
"""

from __future__ import annotations

import errno
import heapq
import json
import selectors
import socket
import struct
import sys
import time

from ..impair import GONE, LINK_DOWN, QUEUE_FULL, Copy, Direction
from ..model import Impairment
from .ring import TP_STATUS_KERNEL, TP_STATUS_USER, PacketRing

REC = struct.Struct("<qIIBB2x")      # entered (ns, CLOCK_REALTIME), length, bit, side, flags
_HDR = struct.Struct("=IIIHHIIHH")   # tpacket2_hdr up to tp_vlan_tpid
_STATUS = struct.Struct("=I")
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
SO_SNDBUFFORCE = 32
SNDBUF = 32 << 20        # frames tbf queues are charged to the sending socket
MAX_PENDING = 64 << 20   # record bytes held for a capture client that does not keep up
BATCH = 256


class TimedRing(PacketRing):
    """A ``PacketRing`` that also gives each frame's receive time, with its VLAN tag put back
    (the receive path hands the tag over beside the frame)."""

    def timed_frames(self, limit: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        m = self.map
        while len(out) < limit:
            off = self._offset(self.head)
            st, length, snaplen, mac, _, sec, nsec, tci, tpid = _HDR.unpack_from(m, off)
            if not st & TP_STATUS_USER:
                break
            if snaplen < length:
                self.truncated += 1
            else:
                frame = m[off + mac: off + mac + snaplen]
                if st & TP_STATUS_VLAN_VALID:
                    proto = tpid if st & TP_STATUS_VLAN_TPID_VALID else 0x8100
                    frame = frame[:12] + struct.pack("!HH", proto, tci) + frame[12:]
                out.append((sec * 1_000_000_000 + nsec, frame))
            _STATUS.pack_into(m, off, TP_STATUS_KERNEL)
            self.head = (self.head + 1) % self.nframes
        return out


class Shim:
    def __init__(self, cfg: dict):
        self.rings = [TimedRing(i, cfg["mtu"]) for i in cfg["ifaces"]]
        for ring in self.rings:
            ring.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SNDBUF)
        self.dirs = [Direction(seed, Impairment(**imp))
                     for seed, imp in zip(cfg["seeds"], cfg["impair"], strict=True)]
        self.held: list[tuple[int, int, int, Copy, int]] = []  # (due, seq, side, copy, entered)
        self.seq = 0
        self.up = True
        self.offset = time.time_ns() - time.monotonic_ns()   # realtime -> monotonic
        self.stats = {"frames": [0, 0], "sent": [0, 0], "lost": [0, 0], "truncated": 0,
                      "records_dropped": 0}
        self.sel = selectors.SelectSelector()   # select(2): microsecond timeouts, epoll has ms
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ctl.bind(cfg["ctl"])
        self.cap = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.cap.bind(cfg["cap"])
        self.cap.listen(4)
        self.clients: dict[socket.socket, bytearray] = {}
        for side, ring in enumerate(self.rings):
            self.sel.register(ring, selectors.EVENT_READ, side)
        self.sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        self.sel.register(self.cap, selectors.EVENT_READ, "cap")

    def run(self) -> None:
        while True:
            timeout = None
            if self.held:
                timeout = max(0.0, (self.held[0][0] - time.monotonic_ns()) / 1e9)
            for key, events in self.sel.select(timeout):
                what = key.data
                if isinstance(what, int):
                    self._read(what)
                elif what == "ctl":
                    self._control()
                elif what == "cap":
                    client, _ = self.cap.accept()
                    client.setblocking(False)
                    self.clients[client] = bytearray()
                    self.sel.register(client, selectors.EVENT_READ, client)
                else:
                    self._client(what, events)
            self._release()
            self._flush()

    def _read(self, side: int) -> None:
        ring = self.rings[side]
        frames = ring.timed_frames(BATCH)
        if not frames:
            ring.pending_error()   # a readable ring with nothing in it: ENETDOWN, cleared
        self.stats["frames"][side] += len(frames)
        self.stats["truncated"] = sum(r.truncated for r in self.rings)
        direction = self.dirs[side]
        for entered, frame in frames:
            for copy in direction.decide(frame, entered - self.offset):
                if copy.flags & GONE:
                    self._settled(side, copy, entered)
                else:
                    heapq.heappush(self.held, (copy.due_ns, self.seq, side, copy, entered))
                    self.seq += 1

    def _release(self) -> None:
        now = time.monotonic_ns()
        held = self.held
        while held and held[0][0] <= now:
            _, _, side, copy, entered = heapq.heappop(held)
            flags = copy.flags
            if not self.up:
                flags |= LINK_DOWN
            else:
                try:
                    self.rings[1 - side].send(copy.data)
                except (BlockingIOError, InterruptedError):
                    flags |= QUEUE_FULL   # the socket's buffer is full of frames tbf holds
                except OSError as exc:
                    flags |= QUEUE_FULL if exc.errno == errno.ENOBUFS else LINK_DOWN
            self._settled(side, copy._replace(flags=flags), entered)

    def _settled(self, side: int, copy: Copy, entered: int) -> None:
        self.stats["lost" if copy.flags & GONE else "sent"][side] += 1
        if not self.clients:
            return
        record = REC.pack(entered, len(copy.data), copy.bit, side, copy.flags) + copy.data
        for pending in self.clients.values():
            if len(pending) < MAX_PENDING:
                pending += record
            else:
                self.stats["records_dropped"] += 1

    def _flush(self) -> None:
        for client, pending in list(self.clients.items()):
            if pending:
                self._client(client, selectors.EVENT_WRITE)

    def _client(self, client: socket.socket, events: int) -> None:
        pending = self.clients[client]
        try:
            if events & selectors.EVENT_READ and not client.recv(4096):
                raise ConnectionResetError
            if pending:
                del pending[:client.send(pending)]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.sel.unregister(client)
            del self.clients[client]
            client.close()
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
        if self.sel.get_key(client).events != want:
            self.sel.modify(client, want, client)

    def _control(self) -> None:
        try:
            data, addr = self.ctl.recvfrom(1 << 16)
        except OSError:
            return
        try:
            req = json.loads(data)
            reply = self._request(req)
        except (ValueError, TypeError, KeyError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        try:
            self.ctl.sendto(json.dumps(reply).encode(), addr)
        except OSError:
            pass

    def _request(self, req: dict) -> dict:
        op = req["op"]
        if op == "set":
            params = [Impairment(**imp) for imp in req["impair"]]
            if len(params) != 2:
                raise ValueError("impair: one mapping per direction")
            for direction, p in zip(self.dirs, params, strict=True):
                direction.params = p
        elif op == "link":
            self.up = bool(req["up"])
        elif op != "stats":
            raise ValueError(f"unknown op {op!r}")
        return {"ok": True, "mono": time.monotonic(), **self.stats}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ftsslab.lab.veth.impaird <lab dir>/link-N.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        cfg = json.load(f)
    shim = Shim(cfg)
    with open(cfg["ready"], "w"):
        pass
    shim.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
