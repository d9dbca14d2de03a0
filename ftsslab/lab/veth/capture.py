"""AF_PACKET capture of one end of every link, both directions, from the runner process.

One ``SOCK_RAW``/``ETH_P_ALL`` socket per link, opened inside the namespace of
the link's ``a`` end (on a thread that ``setns()``es) and bound to that
interface. A frame the kernel sends out of it comes back as
``PACKET_OUTGOING`` (src = that end), anything else arrived from the peer
(src = the other end). Capturing a single end means every frame on the wire is
seen exactly once; frames that ``send()`` injects at the captured end through
its *own* socket appear once too (the kernel skips only the sending socket).

Timestamps are the kernel's (``SO_TIMESTAMPNS``, CLOCK_REALTIME) minus the lab
start; the step label of a frame is the last ``set_step`` at or before it.

An impaired link has no such socket: its shim (``impaird``) streams each frame once its
fate is settled -- the time it entered the link, both directions, and what the link did to
it (``CapturedFrame.impair``) -- and ``add_shim`` reads that stream.
"""

from __future__ import annotations

import bisect
import os
import selectors
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..backend import CapturedFrame
from ..impair import note
from .impaird import REC
from .netns import call_in_netns

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SNAPLEN = 65536 + 64
RCVBUF = 8 << 20


@dataclass
class _Tap:
    sock: socket.socket
    link: str
    here: str    # the captured endpoint's name
    peer: str    # the other end


@dataclass
class _Shim:
    sock: socket.socket
    link: str
    ends: tuple[str, str]   # the link's a and b: frames of the shim's side 0 leave a
    buf: bytearray


def open_packet_socket(ifname: str, rcvbuf: int | None = None) -> socket.socket:
    """A raw packet socket bound to ``ifname`` in the calling thread's namespace."""
    # protocol 0 at creation, ETH_P_ALL only at bind: re-hooking a running socket costs the
    # kernel a synchronize_net() (tens of ms each) -- this way there is none
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        if rcvbuf:
            try:
                s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)   # SO_RCVBUFFORCE (root)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((ifname, ETH_P_ALL))   # Python converts to network order itself
    except BaseException:
        s.close()
        raise
    return s


def close_sockets(socks: list[socket.socket]) -> None:
    """Close packet sockets in parallel: each close waits for an RCU grace period
    (``synchronize_net`` in ``packet_release``), which overlap when done together."""
    if len(socks) <= 1:
        for s in socks:
            s.close()
        return
    with ThreadPoolExecutor(max_workers=min(64, len(socks))) as pool:
        list(pool.map(socket.socket.close, socks))


def _open_tap(ifname: str) -> socket.socket:
    s = open_packet_socket(ifname, RCVBUF)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setblocking(False)
    return s


class Capture:
    def __init__(self, start_real: float) -> None:
        self.start_real = start_real
        self._taps: list[_Tap] = []
        self._shims: list[_Shim] = []
        self._lock = threading.Lock()
        # (t, seq, link, src, dst, data, what an impaired link did to it)
        self._raw: list[tuple[float, int, str, str, str, bytes, str]] = []
        self._seq = 0
        self._steps_t: list[float] = [float("-inf")]
        self._steps_l: list[str] = [""]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- set-up -------------------------------------------------------------------------------
    def add_link(self, link: str, ns: str, ifname: str, here: str, peer: str) -> None:
        sock = call_in_netns(ns, _open_tap, ifname)
        tap = _Tap(sock, link, here, peer)
        with self._lock:
            self._taps.append(tap)
            self._sel.register(sock, selectors.EVENT_READ, tap)

    def add_shim(self, link: str, path: str, a: str, b: str) -> None:
        """Capture an impaired link from its shim's record stream at ``path``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        shim = _Shim(sock, link, (a, b), bytearray())
        with self._lock:
            self._shims.append(shim)
            self._sel.register(sock, selectors.EVENT_READ, shim)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="veth-capture", daemon=True)
        self._thread.start()

    def set_step(self, label: str) -> None:
        with self._lock:
            self._steps_t.append(time.time() - self.start_real)
            self._steps_l.append(label)

    # -- reading ------------------------------------------------------------------------------
    def _drain(self, tap: _Tap) -> None:
        """Read everything queued on one socket (caller holds the lock)."""
        while True:
            try:
                data, anc, _flags, addr = tap.sock.recvmsg(SNAPLEN, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            ts = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    ts = sec + nsec / 1e9
            if ts is None:
                ts = time.time()
            outgoing = addr[2] == PACKET_OUTGOING
            src, dst = (tap.here, tap.peer) if outgoing else (tap.peer, tap.here)
            self._raw.append((ts - self.start_real, self._seq, tap.link, src, dst, data, ""))
            self._seq += 1

    def _drain_shim(self, shim: _Shim) -> None:
        """Read the shim's records so far (caller holds the lock)."""
        buf = shim.buf
        while shim.sock.fileno() >= 0:
            try:
                chunk = shim.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:   # the shim is gone: what it sent is kept
                self._sel.unregister(shim.sock)
                shim.sock.close()
                break
            buf += chunk
        pos, size = 0, REC.size
        while len(buf) - pos >= size:
            entered, length, bit, side, flags = REC.unpack_from(buf, pos)
            if len(buf) < pos + size + length:
                break
            src, dst = shim.ends if side == 0 else shim.ends[::-1]
            self._raw.append((entered / 1e9 - self.start_real, self._seq, shim.link, src, dst,
                              bytes(buf[pos + size:pos + size + length]), note(flags, bit)))
            self._seq += 1
            pos += size + length
        del buf[:pos]

    def _loop(self) -> None:
        while not self._stop:
            try:
                ready = self._sel.select(timeout=0.5)
            except (OSError, ValueError):
                return
            with self._lock:
                if self._stop:
                    return
                for key, _ in ready:
                    if key.data is None:
                        os.read(self._wake_r, 4096)
                    elif isinstance(key.data, _Shim):
                        self._drain_shim(key.data)
                    else:
                        self._drain(key.data)

    def frames(self) -> list[CapturedFrame]:
        with self._lock:
            for tap in self._taps:
                self._drain(tap)
            for shim in self._shims:
                self._drain_shim(shim)
            raw = sorted(self._raw)
            out = []
            for t, _seq, link, src, dst, data, impair in raw:
                i = bisect.bisect_right(self._steps_t, t) - 1
                out.append(CapturedFrame(time=t, link=link, src=src, dst=dst, data=data,
                                         step=self._steps_l[i], impair=impair))
            return out

    def close(self) -> None:
        self._stop = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with self._lock:
            for tap in self._taps:
                try:
                    self._sel.unregister(tap.sock)
                except (KeyError, ValueError):
                    pass
            close_sockets([t.sock for t in self._taps])
            self._taps.clear()
            for shim in self._shims:
                if shim.sock.fileno() >= 0:
                    self._sel.unregister(shim.sock)
                    shim.sock.close()
            self._shims.clear()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._wake_r = self._wake_w = -1
            try:
                self._sel.close()
            except Exception:
                pass
