"""Replay a capture onto an endpoint, tcpreplay-style, on an absolute timeline.

Two halves, so timing is testable without root or real time:

- ``build_schedule(packets, ...)`` (sans-IO) says when each frame is due, in seconds from
  the start of the replay. File times are taken relative to the first packet;
  ``multiplier`` scales the gaps (2 = twice as fast), ``pps`` ignores the file's times
  and spaces packets ``1/pps`` apart, ``topspeed`` makes every frame due at once. ``loop``
  repeats the file: each pass starts where the previous one ended (with ``pps``, one gap
  later). A packet stamped earlier than the one before it is due at the same time as that
  one.
- ``run_schedule(schedule, send, clock=..., sleep=...)`` sends each frame at ``start +
  due`` on the given clock (absolute: a late send does not shift the ones after it); a
  ``send`` that raises counts as failed and the replay goes on. ``ReplayReport`` is the
  closing report (packets, bytes, seconds, rates, failed).

Frames stay slices of the capture file's bytes (``Frames``) from reading to sending: at
200k frames per second any object or Python call per frame shows. ``send`` is a function
of one frame, or a ``PacketSocket``, which hands every frame that is due to the kernel in
one ``sendmmsg`` call per 1024 frames.

``replay_onto(backend, endpoint, ...)`` drives a lab backend: its ``now``/``advance``
are the clock and sleep, so in the sim the replay runs on virtual time.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import accumulate
from typing import Any

from ..pcapng import Buffer, load_capture

__all__ = [
    "Frames", "PacketSocket", "ReplayReport", "Schedule", "build_schedule", "read_capture",
    "replay", "replay_onto", "run_schedule",
]


class Frames:
    """Frames as slices of one buffer, and their times (in seconds; computed when asked for).

    Frame ``i`` is ``data[offsets[i]:offsets[i] + lengths[i]]``: a capture's frames are
    not copied out of the file's bytes, and ``sendmmsg`` takes them as they are.
    """

    def __init__(self, data: Buffer, offsets: array, lengths: array,
                 times: Callable[[], Sequence[float]]):
        self.data, self.offsets, self.lengths, self._times = data, offsets, lengths, times

    @classmethod
    def of(cls, packets: Iterable[tuple[float, bytes] | bytes]) -> Frames:
        """From ``(timestamp, frame)`` pairs or bare frames (time 0)."""
        items = [(0.0, bytes(p)) if isinstance(p, bytes | bytearray | memoryview)
                 else (float(p[0]), bytes(p[1])) for p in packets]
        lengths = array("Q", (len(f) for _, f in items))
        offsets = array("Q", accumulate(lengths, initial=0))
        offsets.pop()
        times = [t for t, _ in items]
        return cls(b"".join(f for _, f in items), offsets, lengths, lambda: times)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> bytes:
        at = self.offsets[i]
        return bytes(self.data[at:at + self.lengths[i]])

    def times(self) -> Sequence[float]:
        return self._times()


def read_capture(source: str | os.PathLike | bytes | bytearray) -> Frames:
    """Every frame of a pcap or pcapng file (path or its bytes), with its time.

    ``pcapng.CaptureError`` (a ValueError) when the data is not a capture file or is damaged:
    all of it is read before a replay starts, so a damaged file sends nothing.
    """
    cap = load_capture(source)
    return Frames(cap.data, cap.offsets, cap.lengths, cap.times)


@dataclass(frozen=True)
class Schedule:
    """Pass ``k`` (of ``loop``) sends frame ``i`` at ``k * span + dues[i]`` seconds after
    the start; ``dues`` is None when every frame is due at once (topspeed)."""

    frames: Frames
    dues: Sequence[float] | None
    span: float
    loop: int

    def __len__(self) -> int:
        return len(self.frames) * self.loop

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        """``(due, frame)`` in sending order."""
        for k in range(self.loop):
            for i in range(len(self.frames)):
                due = 0.0 if self.dues is None else k * self.span + self.dues[i]
                yield due, self.frames[i]


def build_schedule(packets: Frames | Iterable[tuple[float, bytes] | bytes], *,
                   multiplier: float | None = None, pps: float | None = None,
                   topspeed: bool = False, loop: int = 1) -> Schedule:
    """The sans-IO timeline of ``packets`` (``Frames``, or what ``Frames.of`` takes).

    At most one of ``multiplier``/``pps``/``topspeed``; none means the file's own pace
    (multiplier 1).
    """
    if sum((multiplier is not None, pps is not None, bool(topspeed))) > 1:
        raise ValueError("choose one of multiplier, pps and topspeed")
    if multiplier is not None and not multiplier > 0:
        raise ValueError(f"multiplier must be > 0 (got {multiplier})")
    if pps is not None and not pps > 0:
        raise ValueError(f"pps must be > 0 (got {pps})")
    if isinstance(loop, bool) or not isinstance(loop, int) or loop < 1:
        raise ValueError(f"loop must be a whole number >= 1 (got {loop!r})")
    frames = packets if isinstance(packets, Frames) else Frames.of(packets)
    if topspeed or not len(frames):
        return Schedule(frames, None, 0.0, loop)
    if pps is not None:
        gap = 1.0 / pps
        return Schedule(frames, [i * gap for i in range(len(frames))], len(frames) * gap, loop)
    scale = 1.0 / (multiplier if multiplier is not None else 1.0)
    times = frames.times()
    first, last, dues = times[0], 0.0, []
    for stamp in times:
        last = max(last, (stamp - first) * scale)
        dues.append(last)
    return Schedule(frames, dues, dues[-1], loop)


@dataclass(frozen=True)
class ReplayReport:
    """tcpreplay's closing lines: what was sent, how long it took, how fast."""

    attempted: int
    packets: int        # sent successfully
    bytes: int          # of the packets sent successfully
    seconds: float
    pps: float
    mbps: float
    failed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"Actual: {self.packets} packets ({self.bytes} bytes) sent in "
                f"{self.seconds:.6f} seconds\n"
                f"Rated: {self.bytes / self.seconds if self.seconds > 0 else 0.0:.1f} Bps, "
                f"{self.mbps:.3f} Mbps, {self.pps:.2f} pps\n"
                f"Statistics for network device:\n"
                f"\tSuccessful packets: {self.packets}\n"
                f"\tFailed packets: {self.failed}")


SendRange = Callable[[Frames, int, int], tuple[int, int, int]]


def _one_by_one(send: Callable[[bytes], Any]) -> SendRange:
    """``send_range`` from a function of one frame."""
    def send_range(frames: Frames, start: int, stop: int) -> tuple[int, int, int]:
        sent = failed = nbytes = 0
        for i in range(start, stop):
            frame = frames[i]
            try:
                send(frame)
            except Exception:
                failed += 1
                continue
            sent += 1
            nbytes += len(frame)
        return sent, failed, nbytes
    return send_range


def run_schedule(schedule: Schedule, send: Callable[[bytes], Any] | PacketSocket, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = time.sleep) -> ReplayReport:
    """Send each frame at ``start + due`` on ``clock``; a frame whose send fails counts as
    failed. ``send`` takes one frame, or has ``send_range(frames, start, stop)`` (as a
    ``PacketSocket``) and is given every frame already due at once."""
    send_range = getattr(send, "send_range", None) or _one_by_one(send)
    frames, dues, n = schedule.frames, schedule.dues, len(schedule.frames)
    start = clock()
    sent = failed = nbytes = 0
    for k in range(schedule.loop if n else 0):
        base, i = k * schedule.span, 0
        while i < n:
            stop = n
            if dues is not None:
                wait = start + base + dues[i] - clock()
                if wait > 0:
                    sleep(wait)
                stop = bisect_right(dues, clock() - start - base, i + 1)
            ok, bad, size = send_range(frames, i, stop)
            sent, failed, nbytes, i = sent + ok, failed + bad, nbytes + size, stop
    seconds = max(clock() - start, 0.0)
    pps = sent / seconds if seconds > 0 else 0.0
    mbps = nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0
    return ReplayReport(sent + failed, sent, nbytes, seconds, pps, mbps, failed)


def shifted(values: Sequence[int], by: int, typecode: str = "Q") -> array:
    """``values`` each plus ``by``, as an array of unsigned words: one big-integer addition
    over all the words at once: 5 ms for a 200k-frame file's addresses, where adding one
    by one took 20. No carry crosses a word while every sum fits in one (addresses do)."""
    words = array(typecode, values)
    size = words.itemsize
    total = (int.from_bytes(words.tobytes(), sys.byteorder)
             + int.from_bytes(by.to_bytes(size, sys.byteorder) * len(words), sys.byteorder))
    out = array(typecode)
    out.frombytes(total.to_bytes(size * len(words), sys.byteorder))
    return out


class PacketSocket:
    """A send-only AF_PACKET socket bound to ``ifname`` (in the calling thread's network
    namespace) that sends frames with ``sendmmsg``, many per system call.

    As the lab's own send does, a frame refused because the link is down counts as sent
    (the link carries nothing); any other refusal counts as failed.
    """

    BATCH = 1024  # frames per sendmmsg call
    # struct mmsghdr is 8 pointer-sized words on Linux (LP64 and ILP32): msg_iov is word 2,
    # msg_iovlen word 3; struct iovec is 2 words (base, length).
    _WORD, _MSG = "Q" if ctypes.sizeof(ctypes.c_void_p) == 8 else "I", 8

    def __init__(self, ifname: str):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # never receives
        try:
            self.sock.bind((ifname, 0))
        except BaseException:
            self.sock.close()
            raise
        self._sendmmsg = ctypes.CDLL(None, use_errno=True).sendmmsg
        self._sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        word, n = self._WORD, self.BATCH
        self._iov = array(word, bytes(2 * n * array(word).itemsize))  # refilled per call
        first, step = self._iov.buffer_info()[0], 2 * self._iov.itemsize
        self._msgs = array(word, bytes(self._MSG * n * self._iov.itemsize))
        self._msgs[2::self._MSG] = array(word, range(first, first + step * n, step))
        self._msgs[3::self._MSG] = array(word, [1]) * n
        self._frames: tuple[Frames, Any, array, array] | None = None

    def close(self) -> None:
        self._frames = None
        self.sock.close()

    def _prepare(self, frames: Frames) -> tuple[array, array]:
        """Each frame's address and length, as iovec words."""
        if self._frames is None or self._frames[0] is not frames:
            data = frames.data
            if isinstance(data, bytes):  # c_char_p points at the bytes object's own buffer
                anchor: Any = ctypes.c_char_p(data)
                base = ctypes.cast(anchor, ctypes.c_void_p).value or 0
            else:
                anchor = ctypes.c_char.from_buffer(data)
                base = ctypes.addressof(anchor)
            starts, lengths = shifted(frames.offsets, base, self._WORD), frames.lengths
            if lengths.typecode != self._WORD:
                lengths = array(self._WORD, lengths)
            self._frames = (frames, anchor, starts, lengths)
        return self._frames[2], self._frames[3]  # the anchor keeps the buffer alive

    def send_range(self, frames: Frames, start: int, stop: int) -> tuple[int, int, int]:
        """Send frames ``start`` to ``stop - 1``: (sent, failed, bytes sent)."""
        starts, lengths = self._prepare(frames)
        iov, msgs, fd = self._iov, self._msgs.buffer_info()[0], self.sock.fileno()
        sent = failed = nbytes = 0
        i = start
        while i < stop:
            n = min(stop - i, self.BATCH)
            iov[0:2 * n:2], iov[1:2 * n:2] = starts[i:i + n], lengths[i:i + n]
            done = self._sendmmsg(fd, msgs, n, 0)
            if done > 0:
                sent += done
                nbytes += sum(lengths[i:i + done])
                i += done
                continue
            code = ctypes.get_errno()
            if code == errno.EINTR:
                continue
            if code in (errno.ENETDOWN, errno.ENXIO):
                sent += 1
                nbytes += lengths[i]
            else:
                failed += 1
            i += 1
        return sent, failed, nbytes


def replay(source: str | os.PathLike | bytes | bytearray | Frames | Iterable,
           send: Callable[[bytes], Any] | PacketSocket, *, multiplier: float | None = None,
           pps: float | None = None, topspeed: bool = False, loop: int = 1,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], Any] = time.sleep) -> ReplayReport:
    """Read (a path or a capture's bytes) or take packets, schedule them, send them."""
    packets = (read_capture(source) if isinstance(source, str | os.PathLike | bytes | bytearray)
               else source)
    schedule = build_schedule(packets, multiplier=multiplier, pps=pps, topspeed=topspeed,
                              loop=loop)
    return run_schedule(schedule, send, clock=clock, sleep=sleep)


def replay_onto(backend: Any, endpoint: str,
                source: str | os.PathLike | bytes | bytearray | Frames | Iterable,
                **options: Any) -> ReplayReport:
    """Replay onto ``endpoint`` of a lab ``Backend`` on its own clock (virtual in the sim)."""
    return replay(source, lambda frame: backend.send(endpoint, frame),
                  clock=backend.now, sleep=backend.advance, **options)
