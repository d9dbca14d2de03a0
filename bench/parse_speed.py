"""Fast parsers against Scapy dissection, on the same reference frames, in one run.

    python bench/parse_speed.py [--seconds S] [--json]

For every family, both sides start from the whole Ethernet frame: Scapy runs
``Ether(frame)`` and the fast side walks the headers with struct and calls the
family's parser. Figures are frames per second and the ratio fast/Scapy; the
ratio is what to compare between machines (absolute rates are noisy here).
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from collections.abc import Callable
from pathlib import Path

from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

import ftsslab.layers  # noqa: F401  (bindings for Scapy's side)
from ftsslab.fast import fc, ftss, i2o, roce, tch, xap

REFERENCE = Path(__file__).resolve().parents[1] / "pcaps" / "reference"


def _l4(frame: bytes) -> tuple[int, int, int] | None:
    """(IP protocol, L4 header offset, IP total end) of an untagged IPv4 frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    (total,) = struct.unpack_from("!H", frame, 16)
    return frame[23], 14 + ihl, 14 + total


def _ip_options(frame: bytes):
    return memoryview(frame)[34 : 14 + (frame[14] & 0x0F) * 4]


def _xap(frame: bytes):
    l4 = _l4(frame)
    if l4 is None:
        return None
    proto, off, end = l4
    if off > 34:  # IP options present: the IP option carrier
        return xap.parse_xap_ip_options(_ip_options(frame))
    if proto == 17:
        return xap.parse_xap_udp(memoryview(frame)[off + 8 : end])
    if proto == 6:
        dataofs = (frame[off + 12] >> 4) * 4
        return xap.parse_xap_tcp_options(memoryview(frame)[off + 20 : off + dataofs])
    return None


def _tch(frame: bytes):
    l4 = _l4(frame)
    if l4 is None:
        return None
    proto, off, end = l4
    if proto == 17:
        return tch.parse_tch_message(memoryview(frame)[off + 8 : end])
    return tch.parse_tch_tcp(memoryview(frame)[off:end])


def _i2o(frame: bytes):
    l4 = _l4(frame)
    if l4 is None:
        return None
    _, off, end = l4
    (dport,) = struct.unpack_from("!H", frame, off + 2)
    if dport == 4791:  # RoCE SEND: skip the 12-byte BTH, drop the ICRC
        return i2o.parse_i2o(memoryview(frame)[off + 20 : end - 4])
    return i2o.parse_i2o(memoryview(frame)[off + 8 : end])


FAST: dict[str, Callable[[bytes], object]] = {
    "fc": fc.parse_fcoe_frame,
    "ftss": ftss.parse_ftss_frame,
    "xap": _xap,
    "tch": _tch,
    "roce": roce.parse_roce,
    "i2o": _i2o,
}


def rate(func: Callable[[bytes], object], frames: list[bytes], seconds: float) -> float:
    """Frames per second over whole passes of ``frames``, for at least ``seconds``."""
    done, start = 0, time.perf_counter()
    while True:
        for frame in frames:
            func(frame)
        done += len(frames)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def run(seconds: float) -> list[dict]:
    rows = []
    for family, fast in FAST.items():
        frames = [bytes(p) for p in rdpcap(str(REFERENCE / f"{family}.pcapng"))]
        missed = sum(not fast(f) for f in frames)  # None, or nothing found (e.g. [])
        scapy_rate = rate(Ether, frames, seconds)
        fast_rate = rate(fast, frames, seconds)
        rows.append({"family": family, "frames": len(frames), "fast_unparsed": missed,
                     "scapy_per_s": round(scapy_rate), "fast_per_s": round(fast_rate),
                     "ratio": round(fast_rate / scapy_rate, 1)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = run(args.seconds)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fast parse vs Scapy dissect (whole reference frames, same run)")
    for col in ("family", "frames", "Scapy frames/s", "fast frames/s", "fast/Scapy"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["family"], str(r["frames"]), f"{r['scapy_per_s']:,}",
                      f"{r['fast_per_s']:,}", f"{r['ratio']}×")
    Console().print(table)


if __name__ == "__main__":
    main()
