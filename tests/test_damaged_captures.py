"""Damaged captures: every good packet, then one line naming the byte; never fewer in silence.

The reference captures, pcap copies of them (both byte orders, micro- and nanoseconds), a
multi-interface capture with comments and a two-section file are cut at every offset and
have bits flipped. The reader must yield exactly the packets before the damage and raise
``CaptureError`` at the start of the damaged record or block; ``ftsslab inspect`` must show
those packets and say where the damage is in one line, exit status 2.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import re
import shutil
import struct
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.cli import main
from ftsslab.pcapng import CaptureError, Interface, PcapNgWriter, read_packets

REFERENCE = Path(__file__).resolve().parents[1] / "pcaps" / "reference"


def pcap(packets, endian: str, nano: bool) -> bytes:
    """A classic pcap of ``packets`` (written here, so the test does not trust a writer)."""
    per_second = 10**9 if nano else 10**6
    out = [struct.pack(endian + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0,
                       65535, 1)]  # the reference captures are Ethernet
    for p in packets:
        sec, frac = divmod(round(p.time * per_second), per_second)
        out.append(struct.pack(endian + "IIII", sec, frac, len(p.data), len(p.data)) + p.data)
    return b"".join(out)


def interfaces_and_comments() -> bytes:
    """Two interfaces, comments, and frames of every length modulo 4 (padding)."""
    fh = io.BytesIO()
    w = PcapNgWriter(fh, comments=["two interfaces"])
    a, b = Interface("h1:eth0", "link h1 <-> s1"), Interface("h2:eth0")
    for i in range(12):
        w.packet(a if i % 3 else b, bytes(range(i * 7 % 61)), 10**18 + i * 1000,
                 [f"frame {i}"] * (i % 3))
    return fh.getvalue()


CAPTURES = {f.name: f.read_bytes() for f in sorted(REFERENCE.glob("*.pcapng"))}
_ftss = list(read_packets(CAPTURES["ftss.pcapng"]))
CAPTURES |= {
    "ftss-le-usec.pcap": pcap(_ftss, "<", False),
    "ftss-be-nsec.pcap": pcap(_ftss, ">", True),
    "roce-be-usec.pcap": pcap(list(read_packets(CAPTURES["roce.pcapng"])), ">", False),
    "interfaces.pcapng": interfaces_and_comments(),
    "two-sections.pcapng": CAPTURES["fc.pcapng"] + interfaces_and_comments(),
}


@dataclass(frozen=True)
class Unit:
    """A record or block of an intact capture: where its packet bytes are (``data``), which
    other bytes a flip may change without touching the framing (``free``: timestamps, the
    original length) and where a flip may turn it into another valid unit (``ambiguous``:
    a pcap record's length, a pcapng packet block's type)."""

    start: int
    end: int
    data: range | None = None
    free: tuple[range, ...] = ()
    ambiguous: range = range(0)

    def harmless(self, pos: int) -> bool:
        return self.data is not None and (pos in self.data or any(pos in r for r in self.free))


def units(data: bytes) -> list[Unit]:
    """The units of an intact capture, walked from its lengths alone."""
    found = []
    if data[:4] == b"\x0a\x0d\x0d\x0a":  # pcapng: ftsslab and the reference are little-endian
        at = 0
        while at < len(data):
            kind, total = struct.unpack_from("<II", data, at)
            if kind == 6:
                caplen = struct.unpack_from("<I", data, at + 20)[0]
                found.append(Unit(at, at + total, range(at + 28, at + 28 + caplen),
                                  (range(at + 12, at + 20), range(at + 24, at + 28)),
                                  range(at, at + 4)))
            else:
                found.append(Unit(at, at + total))
            at += total
        return found
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    found.append(Unit(0, 24))
    at = 24
    while at < len(data):
        caplen = struct.unpack_from(endian + "I", data, at + 8)[0]
        end = at + 16 + caplen
        found.append(Unit(at, end, range(at + 16, end),
                          (range(at, at + 8), range(at + 12, at + 16)), range(at + 8, at + 12)))
        at = end
    return found


@functools.cache
def intact(name: str) -> tuple[list, list[Unit]]:
    """The packets of an undamaged capture and its units."""
    return list(read_packets(CAPTURES[name])), units(CAPTURES[name])


def read(data: bytes) -> tuple[list, CaptureError | None]:
    got = []
    try:
        for p in read_packets(data):
            got.append(p)
    except CaptureError as exc:
        return got, exc
    return got, None


def check_cut(name: str, cut: int) -> tuple[list, CaptureError | None]:
    """The packets wholly before ``cut`` and, unless it falls between units, an error
    at the start of the unit it cuts."""
    data = CAPTURES[name]
    whole, layout = intact(name)
    got, err = read(data[:cut])
    complete = sum(u.data is not None and u.end <= cut for u in layout)
    assert [p.data for p in got] == [p.data for p in whole[:complete]], (name, cut)
    assert [p.comments for p in got] == [p.comments for p in whole[:complete]]
    if cut > 0 and any(u.end == cut for u in layout):
        assert err is None, (name, cut, err)
    else:
        cut_unit = next(u for u in layout if u.start <= cut < u.end)
        assert err is not None, (name, cut)
        assert (err.offset, err.packets) == (cut_unit.start, complete), (name, cut, str(err))
        assert f"byte {cut_unit.start}" in str(err) and "\n" not in str(err)
    return got, err


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_every_cut_is_exact(name):
    for cut in range(len(CAPTURES[name]) + 1):
        check_cut(name, cut)


def test_a_cut_packet_says_so_like_tshark():
    _, err = check_cut("fc.pcapng", 3000)
    assert "block 21 (Enhanced Packet Block)" in str(err)
    assert "appears to have been cut short in the middle of a packet" in str(err)
    _, err = check_cut("ftss-le-usec.pcap", 500)
    assert "record 4" in str(err) and "middle of a packet" in str(err)


def flipped(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, mask in flips:
        out[pos % len(data)] ^= mask
    return bytes(out)


def check_flips(name: str, flips: list[tuple[int, int]]) -> tuple[list, CaptureError | None]:
    """Damage in packet bytes or timestamps is no damage to the file: every packet, with the
    bytes as they are now. Damage elsewhere is reported, at or after the first damaged unit,
    or leaves as many packets; only an ambiguous flip (see Unit) may make a valid file with
    other packets."""
    data = CAPTURES[name]
    layout = intact(name)[1]
    bad = flipped(data, flips)
    got, err = read(bad)
    changed = [pos for pos in range(len(data)) if bad[pos] != data[pos]]
    unit = {pos: next(u for u in layout if u.start <= pos < u.end) for pos in changed}
    packets = [u for u in layout if u.data is not None]
    if all(unit[pos].harmless(pos) for pos in changed):
        assert err is None, (name, flips, err)
        assert [p.data for p in got] == [bad[u.data.start:u.data.stop] for u in packets]
    elif err is not None:
        assert err.offset >= min(unit[pos].start for pos in changed), (name, flips, str(err))
        assert err.offset <= len(bad) and f"byte {err.offset}" in str(err)
        assert err.packets == len(got) and "\n" not in str(err)
    elif not any(pos in unit[pos].ambiguous for pos in changed):
        assert len(got) == len(packets), (name, flips)
    return got, err


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(CAPTURES)),
       st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)), min_size=1, max_size=3))
def test_flipped_bytes_are_reported_or_harmless(name, flips):
    check_flips(name, flips)


def test_flips_that_break_framing_are_reported():
    """Lengths, trailers, interface ids, magic, block types: each is caught where it is."""
    data = CAPTURES["fc.pcapng"]
    epb = units(data)[2].start  # block 3, the first packet
    for pos, mask, offset, what in [
        (epb + 4, 0x01, epb + 4, "total length 193 is impossible"),
        (epb + 188, 0x01, epb + 188, "at its start but 193 at its end"),
        (epb + 8, 0x01, epb + 8, "unknown interface id 1"),
        (epb + 23, 0x01, epb + 20, "does not fit in the block"),
        (epb + 1, 0x40, epb, "not a registered or local-use block type"),
        (8, 0x01, 8, "bad byte-order magic"),
    ]:
        got, err = read(flipped(data, [(pos, mask)]))
        assert err is not None and what in str(err), (pos, err)
        assert (len(got), err.offset) == (0, offset), str(err)


def test_gzip_cut_or_corrupt_is_reported():
    data = gzip.compress(CAPTURES["ftss.pcapng"])
    whole = list(read_packets(data))
    for cut in (5, 100, len(data) // 2, len(data) - 3):
        got, err = read(data[:cut])
        assert err is not None and "decompressed data" in str(err), cut
        assert [p.data for p in got] == [p.data for p in whole[:len(got)]]
    got, err = read(data[:-8] + bytes([data[-8] ^ 1]) + data[-7:])  # the CRC
    assert err is not None and "gzip" in str(err) and len(got) == len(whole)


# ----------------------------------------------------------------------- ftsslab inspect


def run(*args: str) -> tuple[int, str, str]:
    """Any ``ftsslab`` command in this process."""
    out, err = io.StringIO(), io.StringIO()
    code = None
    with redirect_stdout(out), redirect_stderr(err), \
            mock.patch.object(sys, "argv", ["ftsslab", *args]):
        try:
            main()
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()



def inspect(path: Path, *args: str) -> tuple[int, str, str]:
    """``ftsslab inspect`` in this process: a subprocess per example would take seconds."""
    return run("inspect", str(path), *args)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(CAPTURES)), st.one_of(
    st.tuples(st.just("cut"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)),
                                        min_size=1, max_size=3))))
def test_inspect_shows_all_or_names_the_damage(tmp_path_factory, name, damage):
    kind, how = damage
    if kind == "cut":
        got, err = check_cut(name, round(how * len(CAPTURES[name])))
        data = CAPTURES[name][:round(how * len(CAPTURES[name]))]
    else:
        got, err = check_flips(name, how)
        data = flipped(CAPTURES[name], how)
    path = tmp_path_factory.mktemp("damaged") / name
    path.write_bytes(data)
    code, out, errors = inspect(path, "--json")
    assert "Traceback" not in errors and "WARNING" not in out + errors
    shown = json.loads(out) if out.strip() else []
    assert len(shown) == len(got)
    if err is None:
        assert (code, errors) == (0, "")
    else:
        lines = errors.splitlines()
        assert code == 2 and len(lines) == 1, errors
        assert re.search(rf"\bbyte {err.offset}\b", lines[0]) and str(path) in lines[0]


@pytest.mark.tshark
@pytest.mark.parametrize("name, damage, tshark_says", [
    ("fc.pcapng", ("cut", 3000), "cut short in the middle of a packet"),
    ("ftss-le-usec.pcap", ("cut", 500), "cut short in the middle of a packet"),
    ("fc.pcapng", ("flip", 316), "don't match"),           # block 3's trailer
    ("fc.pcapng", ("flip", 136), "interface index 1"),     # block 3's interface id
])
def test_tshark_agrees(tmp_path, name, damage, tshark_says):
    """tshark shows as many packets and also calls the file damaged."""
    kind, at = damage
    data = CAPTURES[name][:at] if kind == "cut" else flipped(CAPTURES[name], [(at, 1)])
    path = tmp_path / name
    path.write_bytes(data)
    res = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and tshark_says in res.stderr, res.stderr
    code, out, errors = inspect(path, "--json")
    assert code == 2 and len(json.loads(out)) == len(res.stdout.splitlines())
    assert "damaged at byte" in errors


def test_merge_refuses_a_damaged_input_and_writes_nothing(tmp_path):
    good, cut = tmp_path / "good.pcapng", tmp_path / "cut.pcapng"
    good.write_bytes(CAPTURES["fc.pcapng"])
    cut.write_bytes(CAPTURES["ftss.pcapng"][:1000])
    merged = tmp_path / "merged.pcapng"
    code, _, errors = run("merge", str(merged), str(good), str(cut))
    assert code == 2 and len(errors.splitlines()) == 1, errors
    assert f"{cut}: damaged at byte " in errors and "cut short" in errors
    assert not merged.exists()
