"""The link level, in the sim only (D3.13, optional): on each point-to-point link a frame
travels as flits, and the link's receiver acknowledges them -- Figs. 9B and 10B (L611-612,
L637, L641, L647-658). On RoCE the link is Ethernet's, so nothing here reaches a wire.

"Flits are generated and consumed at each end of a physical link" (L641): each hop of a path
cuts the frames it passes into flits of at most ``FLIT_BYTES``, and a switch consumes them at
its input port and creates new ones at its output (L649). The receiving end takes flits in
sequence; when the link goes quiet -- after the train of frames it was sent -- it sends one ack
flit for every flit taken since its last ("one acknowledgment flit acknowledges several
flits", L647). A flit that fails its check is not taken, nor any after it: the ack flit names
what was taken, and the sender sends again from the first flit not acknowledged ("retransmitted
in response to an error", L641), so the frames come out whole and in order ("link or buffer
contention does not cause loss of data", L539). Credits and virtual lanes are not modelled.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import pairwise
from typing import NamedTuple

# The seed gives no flit size. 96 bytes cut each of Fig. 9B's frames (314 and 302 bytes as
# RoCEv2 frames at a path MTU of 256) into 4 flits, as it draws them, and an ACK frame (62
# bytes) fits inside one flit, as Fig. 10B says.
FLIT_BYTES = 96


class Flit(NamedTuple):
    seq: int  # on its link, in its direction
    frame: int  # which frame of the train
    last: bool  # the frame's last flit
    data: bytes


class LinkEvent(NamedTuple):
    """A flit (``seqs`` = its sequence number) or an ack flit (``seqs`` = those it
    acknowledges) going ``src`` -> ``dst``; ``bad``: a flit that failed its check there."""

    src: str
    dst: str
    kind: str  # "flit" | "ack"
    seqs: tuple[int, ...]
    bad: bool = False


def cut(frames: Sequence[bytes], first_seq: int = 0, size: int = FLIT_BYTES) -> list[Flit]:
    """The flits of a train of frames, numbered on from ``first_seq``."""
    out: list[Flit] = []
    for i, frame in enumerate(frames):
        pieces = [frame[at:at + size] for at in range(0, len(frame), size)] or [b""]
        out += [Flit(first_seq + len(out) + k, i, k == len(pieces) - 1, p)
                for k, p in enumerate(pieces)]
    return out


def carry(path: Sequence[str], frames: Sequence[bytes],
          bad: Collection[tuple[int, int]] = ()) -> tuple[list[LinkEvent], list[bytes]]:
    """Pass a train of ``frames`` along ``path`` (endnode, switches..., endnode), hop by hop;
    the link events and the frames the last node took. ``bad`` holds (hop, seq): that flit
    fails its check on that hop the first time it is sent."""
    events: list[LinkEvent] = []
    failing = set(bad)
    for hop, (src, dst) in enumerate(pairwise(path)):
        flits = cut(frames)
        taken: list[Flit] = []
        while len(taken) < len(flits):
            start = len(taken)
            ok = True
            for f in flits[start:]:
                broken = (hop, f.seq) in failing
                failing.discard((hop, f.seq))
                events.append(LinkEvent(src, dst, "flit", (f.seq,), broken))
                ok = ok and not broken
                if ok:
                    taken.append(f)
            events.append(LinkEvent(dst, src, "ack", tuple(f.seq for f in taken[start:])))
        frames = _reassemble(taken)
    return events, list(frames)


def _reassemble(flits: Sequence[Flit]) -> list[bytes]:
    out, buf = [], b""
    for f in flits:
        buf += f.data
        if f.last:
            out.append(buf)
            buf = b""
    return out
