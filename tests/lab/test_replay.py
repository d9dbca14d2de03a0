"""Replay: sans-IO schedule, a driver on a fake clock, files, the sim backend, the packet
socket on veth; the column reader and merge against Scapy's reader and mergecap."""

from __future__ import annotations

import gzip
import importlib
import io
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, PcapReader, PcapWriter

from ftsslab.lab.model import Endpoint, Link, Node, Scenario
from ftsslab.lab.replay import (
    Frames,
    PacketSocket,
    ReplayReport,
    build_schedule,
    read_capture,
    replay,
    replay_onto,
    run_schedule,
    shifted,
)
from ftsslab.lab.sim import SimBackend
from ftsslab.lab.veth.netns import call_in_netns
from ftsslab.pcapng import CaptureError, Interface, load_capture, merge
from ftsslab.pcapng import PcapNgWriter as LabWriter

REFERENCE = Path(__file__).resolve().parents[2] / "pcaps" / "reference"

PKTS = [(100.0, b"a" * 100), (100.5, b"b" * 100), (102.0, b"c" * 100)]


class FakeClock:
    def __init__(self):
        self.t = 1000.0
        self.sleeps: list[float] = []

    def clock(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


def dues(schedule):
    return [round(d, 9) for d, _ in schedule]


def test_schedule_modes():
    assert dues(build_schedule(PKTS)) == [0, 0.5, 2.0]
    assert dues(build_schedule(PKTS, multiplier=2)) == [0, 0.25, 1.0]
    assert dues(build_schedule(PKTS, multiplier=0.5)) == [0, 1.0, 4.0]
    assert dues(build_schedule(PKTS, pps=10)) == [0, 0.1, 0.2]
    assert dues(build_schedule(PKTS, topspeed=True, loop=2)) == [0] * 6
    assert dues(build_schedule(PKTS, loop=2)) == [0, 0.5, 2.0, 2.0, 2.5, 4.0]
    assert dues(build_schedule(PKTS, pps=10, loop=2)) == [0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert [f for _, f in build_schedule(PKTS, loop=2)] == [p for _, p in PKTS] * 2
    # out-of-order stamps never go back in time; bare frames are time 0
    assert dues(build_schedule([(5.0, b"x"), (4.0, b"y"), (6.0, b"z")])) == [0, 0, 1.0]
    assert dues(build_schedule([b"x", b"y"])) == [0, 0]
    assert list(build_schedule([])) == [] and len(build_schedule(PKTS, loop=3)) == 9


@pytest.mark.parametrize("kw", [
    {"multiplier": 2, "pps": 3}, {"pps": 1, "topspeed": True}, {"multiplier": 0}, {"pps": -1},
    {"loop": 0}, {"loop": 1.5}, {"loop": True},
])
def test_schedule_rejects(kw):
    with pytest.raises(ValueError):
        build_schedule(PKTS, **kw)


def test_driver_absolute_timeline_and_report():
    fc = FakeClock()
    sent = []

    def send(frame):
        sent.append((fc.t, frame))
        fc.t += 0.1        # a slow send: later packets must not drift

    report = run_schedule(build_schedule(PKTS), send, clock=fc.clock, sleep=fc.sleep)
    assert [round(t - 1000, 9) for t, _ in sent] == [0, 0.5, 2.0]
    assert report == ReplayReport(attempted=3, packets=3, bytes=300, seconds=pytest.approx(2.1),
                                  pps=pytest.approx(3 / 2.1), mbps=pytest.approx(2400 / 2.1 / 1e6),
                                  failed=0)
    d = report.as_dict()
    assert set(d) == {"attempted", "packets", "bytes", "seconds", "pps", "mbps", "failed"}
    assert "Actual: 3 packets (300 bytes)" in report.summary()


def test_driver_topspeed_never_sleeps_and_failures_continue():
    fc = FakeClock()
    calls = []

    def send(frame):
        calls.append(frame)
        if frame == b"b" * 100:
            raise OSError("ENOBUFS")

    report = replay(PKTS, send, topspeed=True, loop=3, clock=fc.clock, sleep=fc.sleep)
    assert fc.sleeps == [] and len(calls) == 9
    assert (report.attempted, report.packets, report.failed, report.bytes) == (9, 6, 3, 600)
    assert report.seconds == 0 and report.pps == 0 and report.mbps == 0


def test_driver_pps_spacing():
    fc = FakeClock()
    times = []
    replay(PKTS, lambda f: times.append(fc.t), pps=100, loop=2, clock=fc.clock, sleep=fc.sleep)
    assert [round(t - 1000, 9) for t in times] == [0, 0.01, 0.02, 0.03, 0.04, 0.05]


def frames_for_files():
    pkts = []
    for i in range(4):
        p = Ether(src="02:00:00:01:00:00", dst="ff:ff:ff:ff:ff:ff") / IP(dst="10.0.0.2") / UDP(
            dport=7) / bytes([i])
        p.time = 50 + i * 0.25
        pkts.append(p)
    return pkts


def frames_and_times(frames: Frames) -> list[tuple[float, bytes]]:
    return list(zip(frames.times(), (frames[i] for i in range(len(frames))), strict=True))


@pytest.mark.parametrize("writer", [PcapWriter, PcapNgWriter])
def test_read_pcap_and_pcapng(tmp_path, writer):
    path = tmp_path / "x.cap"
    w = writer(str(path))
    pkts = frames_for_files()
    for p in pkts:
        w.write(p)
    w.close()
    got = frames_and_times(read_capture(path))
    assert [d for _, d in got] == [bytes(p) for p in pkts]
    assert [round(t - 50, 6) for t, _ in got] == [0, 0.25, 0.5, 0.75]
    assert frames_and_times(read_capture(path.read_bytes())) == got   # raw bytes
    gz = tmp_path / "x.cap.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert frames_and_times(read_capture(str(gz))) == got
    fc = FakeClock()
    out = []
    report = replay(path, out.append, multiplier=0.5, clock=fc.clock, sleep=fc.sleep)
    assert out == [bytes(p) for p in pkts] and report.seconds == pytest.approx(1.5)


def test_read_rejects_garbage():
    with pytest.raises(ValueError, match="not a pcap"):
        read_capture(b"this is not a capture file at all")


@pytest.mark.parametrize("writer", [PcapWriter, PcapNgWriter])
def test_a_damaged_capture_is_refused_before_anything_is_sent(tmp_path, writer):
    """A cut-short file is not replayed as a shorter one: nothing goes out, the error says where."""
    path = tmp_path / "x.cap"
    w = writer(str(path))
    for p in frames_for_files():
        w.write(p)
    w.close()
    path.write_bytes(path.read_bytes()[:-5])
    sent = []
    with pytest.raises(CaptureError, match=r"damaged at byte \d+.*cut short") as info:
        replay(path, sent.append, topspeed=True)
    assert sent == [] and info.value.packets == 3 and str(path) in str(info.value)


def test_replay_onto_sim_backend(tmp_path):
    h1 = Endpoint("h1", "eth0", "02:00:00:01:00:00")
    h2 = Endpoint("h2", "eth0", "02:00:00:02:00:00")
    sc = Scenario("r", "<t>", "", (Node("h1", "host"), Node("h2", "host")), (Link(h1, h2),),
                  (), ())
    path = tmp_path / "x.pcap"
    w = PcapWriter(str(path))
    for p in frames_for_files():
        w.write(p)
    w.close()
    b = SimBackend()
    b.up(sc)
    b.advance(1.0)
    report = replay_onto(b, "h1:eth0", path, pps=1000, loop=2)
    b.advance(0.001)
    b.down()
    times = [round(f.time, 9) for f in b.frames()]
    assert times == [1.0 + i / 1000 for i in range(8)]
    assert all(f.src == "h1:eth0" and f.dst == "h2:eth0" for f in b.frames())
    assert report.packets == 8 and report.seconds == pytest.approx(0.007)
    assert report.pps == pytest.approx(8 / 0.007)


class BatchSender:
    """A ``send_range`` that records its calls and takes ``cost`` seconds of a FakeClock."""

    def __init__(self, fc: FakeClock, cost: float, fail: set[int] = frozenset()):
        self.fc, self.cost, self.fail, self.calls = fc, cost, fail, []

    def send_range(self, frames, start, stop):
        self.calls.append((round(self.fc.t - 1000, 9), start, stop))
        self.fc.t += self.cost
        good = [i for i in range(start, stop) if i not in self.fail]
        return len(good), stop - start - len(good), sum(frames.lengths[i] for i in good)


def test_every_frame_already_due_goes_in_one_call_on_the_absolute_timeline():
    fc = FakeClock()
    sender = BatchSender(fc, cost=0.35, fail={2})
    pkts = [(i / 10, bytes([i]) * 60) for i in range(6)]
    report = run_schedule(build_schedule(pkts), sender, clock=fc.clock, sleep=fc.sleep)
    # the first call takes 0.35 s: frames 1-3 are due by then and go in the next call
    assert sender.calls == [(0, 0, 1), (0.35, 1, 4), (0.7, 4, 6)] and fc.sleeps == []
    assert (report.attempted, report.packets, report.failed, report.bytes) == (6, 5, 1, 300)
    fc, frames = FakeClock(), Frames.of(pkts)
    sender = BatchSender(fc, cost=0.01)
    run_schedule(build_schedule(frames, topspeed=True, loop=2), sender, clock=fc.clock,
                 sleep=fc.sleep)
    assert sender.calls == [(0, 0, 6), (0.01, 0, 6)]  # one call a pass
    sender = BatchSender(fc := FakeClock(), cost=0.001)
    run_schedule(build_schedule(frames, multiplier=2), sender, clock=fc.clock, sleep=fc.sleep)
    assert [(t, i) for t, i, _ in sender.calls] == [(i / 20, i) for i in range(6)]


def test_frames_are_slices_of_one_buffer():
    frames = Frames.of([*PKTS, b"bare"])
    assert frames.data == b"a" * 100 + b"b" * 100 + b"c" * 100 + b"bare"
    assert (list(frames.offsets), list(frames.lengths)) == ([0, 100, 200, 300], [100] * 3 + [4])
    assert [frames[i] for i in range(4)] == [p for _, p in PKTS] + [b"bare"]
    assert list(frames.times()) == [100.0, 100.5, 102.0, 0.0]


# ---------------------------------------------------------------- the packet socket, on veth

ETHERTYPE = b"\x88\xb5"  # local experimental: h2's stack ignores it


@pytest.fixture
def pair():
    from ftsslab.lab.veth.backend import VethBackend

    h1 = Endpoint("h1", "eth0", "02:00:00:01:00:00", "10.9.0.1/24")
    h2 = Endpoint("h2", "eth0", "02:00:00:02:00:00", "10.9.0.2/24")
    lab = VethBackend()
    try:
        lab.up(Scenario("replay-socket", "<test>", "", (Node("h1", "host"), Node("h2", "host")),
                        (Link(h1, h2),), (), ()))
        sock = call_in_netns(lab.namespace("h1"), PacketSocket, "eth0")
        try:
            yield lab, sock
        finally:
            sock.close()
    finally:
        lab.down()


def ours(lab, count: int, wait: float = 10) -> list[bytes]:
    """The frames of ours the capture saw, once ``count`` of them have arrived."""
    deadline = time.monotonic() + wait
    while True:
        got = [f.data for f in lab.frames() if f.data[12:14] == ETHERTYPE]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def numbered(n: int, size=lambda i: 60 + i % 1400) -> list[bytes]:
    return [b"\x02\x00\x00\x02\x00\x00\x02\x00\x00\x01\x00\x00" + ETHERTYPE
            + struct.pack("!I", i) + bytes(size(i) - 18) for i in range(n)]


@pytest.mark.root
def test_packet_socket_sends_every_frame_in_order_and_counts_refusals(pair):
    lab, sock = pair
    frames = numbered(2500)  # more than two sendmmsg batches
    frames[1200] += bytes(3000)  # longer than the link's MTU: the kernel refuses it alone
    report = replay(Frames.of(frames), sock, topspeed=True)
    assert (report.attempted, report.packets, report.failed) == (2500, 2499, 1)
    assert report.bytes == sum(map(len, frames)) - len(frames[1200])
    assert ours(lab, 2499) == frames[:1200] + frames[1201:]


@pytest.mark.root
def test_packet_socket_paces_and_a_down_link_carries_nothing(pair, tmp_path):
    lab, sock = pair
    frames = numbered(20)
    path = tmp_path / "frames.pcapng.gz"  # decompressed into a bytearray, not mapped
    with gzip.open(path, "wb") as fh:
        w = LabWriter(fh)
        for i, frame in enumerate(frames):
            w.packet("h1:eth0", frame, i * 10**6)
    report = replay(path, sock, multiplier=2)
    assert report.packets == 20 and report.seconds >= 19 / 2000
    assert ours(lab, 20) == frames
    lab.set_link("h1:eth0 h2:eth0", up=False)
    report = replay(Frames.of(frames), sock, topspeed=True)
    assert (report.packets, report.failed) == (20, 0)  # as the lab's own send counts them
    assert len(ours(lab, 21, wait=0.5)) == 20


# ---------------------------------------------------------------- columns and merge

def two_interfaces() -> bytes:
    """Two named interfaces, comments, odd nanoseconds far from 1970 (a float loses them)."""
    fh = io.BytesIO()
    w = LabWriter(fh)
    a, b = Interface("h1:eth0", "link h1 <-> s1"), Interface("h2:eth0")
    for i in range(12):
        w.packet(a if i % 3 else b, bytes(range(7 + i * 5)), 1_700_000_000_123_456_789 + i * 3,
                 [f"frame {i}"] * (i % 3))
    return fh.getvalue()


def pcap(records: list[tuple[int, bytes, int]], endian: str = ">") -> bytes:
    """A nanosecond pcap of (time in ns, data, original length) records."""
    out = [struct.pack(endian + "IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)]
    for t, data, wirelen in records:
        out.append(struct.pack(endian + "IIII", *divmod(t, 10**9), len(data), wirelen) + data)
    return b"".join(out)


def captures(tmp_path: Path) -> list[Path]:
    paths = sorted(REFERENCE.glob("*.pcapng"))
    for name, data in [("two.pcapng", two_interfaces()),
                       ("be.pcap", pcap([(1_700_000_000_000_000_001 + i, bytes(range(40)), 99)
                                         for i in range(5)]))]:
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    return paths


def test_the_columns_are_what_scapy_reads(tmp_path):
    for path in captures(tmp_path):
        cap, theirs = load_capture(path), list(PcapReader(str(path)))
        assert len(cap) == len(theirs), path
        assert cap.times_ns() == [int(p.time * 10**9) for p in theirs], path
        assert [bytes(cap.data[o:o + n]) for o, n in zip(cap.offsets, cap.lengths, strict=True)
                ] == [p.original for p in theirs]
        assert [cap.interfaces[k].name for k in cap.ifaces] == [
            getattr(p, "sniffed_on", None) for p in theirs]
        assert cap.comments == {i: [c.decode() for c in p.comments]
                                for i, p in enumerate(theirs) if p.comments}
        assert [cap.wirelen(i) for i in range(len(cap))] == [p.wirelen for p in theirs]


def test_merge_orders_by_exact_time_and_keeps_names_comments_lengths(tmp_path):
    a, b, out = tmp_path / "a.pcapng", tmp_path / "b.pcap", tmp_path / "out.pcapng"
    a.write_bytes(two_interfaces())
    b.write_bytes(pcap([(1_700_000_000_123_456_790, b"B" * 30, 1500),   # between a's 1 and 2
                        (1_700_000_000_123_456_792, b"C" * 30, 30)]))   # the time of a's 2
    assert merge(out, [a, b]) == 14
    got = list(PcapReader(str(out)))
    t0 = 1_700_000_000_123_456_789
    assert [int(p.time * 10**9) - t0 for p in got] == [0, 1, 3, 3] + list(range(6, 34, 3))
    assert [p.original[:1] for p in got[:4]] == [b"\0", b"B", b"\0", b"C"]  # a's 3 ns first
    assert [p.sniffed_on for p in got[:4]] == ["h2:eth0", "b.pcap#0", "h1:eth0", "b.pcap#0"]
    assert [p.wirelen for p in got[1:4:2]] == [1500, 30]
    assert got[2].comments == [b"frame 1"] and got[3].comments is None
    assert load_capture(out).interfaces[2].name == "b.pcap#0"


def test_merge_reads_every_input_before_writing(tmp_path):
    good, bad, out = tmp_path / "good.pcapng", tmp_path / "bad.pcapng", tmp_path / "out.pcapng"
    good.write_bytes(two_interfaces())
    bad.write_bytes(two_interfaces()[:-3])
    with pytest.raises(CaptureError, match="cut short"):
        merge(out, [good, bad])
    assert not out.exists()


@pytest.mark.tshark
def test_merge_writes_what_mergecap_writes(tmp_path):
    """Times, lengths, interface names, comments, bytes. (On equal times mergecap puts the
    later input first; ftsslab keeps input order, so no two inputs share a time here.)"""
    inputs = [tmp_path / "two.pcapng", tmp_path / "three.pcapng", REFERENCE / "ftss.pcapng"]
    inputs[0].write_bytes(two_interfaces())
    with inputs[1].open("wb") as fh:
        w = LabWriter(fh)
        for i in range(12):
            w.packet(Interface("h3:eth0"), bytes([i]) * (60 + i), 1_700_000_000_123_456_790 + i * 3,
                     ["odd"] if i % 2 else [])
    ours_, theirs = tmp_path / "ours.pcapng", tmp_path / "theirs.pcapng"
    merge(ours_, inputs)
    subprocess.run([shutil.which("mergecap") or "mergecap", "-w", str(theirs), *map(str, inputs)],
                   check=True, capture_output=True)

    def fields(path: Path) -> str:
        return subprocess.run(
            ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e",
             "frame.len", "-e", "frame.cap_len", "-e", "frame.interface_name", "-e",
             "frame.comment", "-e", "data.data"],
            check=True, capture_output=True, text=True).stdout

    assert fields(ours_) == fields(theirs)
    assert fields(ours_).count("\n") == 24 + len(load_capture(inputs[2]))


# ---------------------------------------------------------------- what the commands import

def test_each_command_comes_from_the_module_the_cli_imports_for_it():
    from ftsslab import cli

    for name in cli.MODULES:
        importlib.import_module(f"ftsslab.cli.{name}")
    found = {c.name or c.callback.__name__: c.callback.__module__
             for c in cli.app.registered_commands}
    found |= {g.name: g.typer_instance.registered_commands[0].callback.__module__
              for g in cli.app.registered_groups}
    assert found == {name: f"ftsslab.cli.{m}" for name, m in cli.COMMANDS.items()}


@pytest.mark.parametrize("args", [["merge", "{out}", "{a}", "{b}"],
                                  ["replay", "{a}", "--into", "h1:eth0", "--lab", "nosuch"]])
def test_replay_and_merge_import_neither_scapy_nor_the_lab_backend(tmp_path, args):
    """Importing Scapy alone takes about as long as replaying 200k frames; rich, a twentieth
    of it, is imported for an error only."""
    (tmp_path / "a.pcapng").write_bytes(two_interfaces())
    (tmp_path / "b.pcapng").write_bytes(two_interfaces())
    paths = {"out": tmp_path / "out.pcapng", "a": tmp_path / "a.pcapng", "b": tmp_path / "b.pcapng"}
    argv = [a.format(**paths) for a in args]
    show = "import atexit, sys; atexit.register(lambda: print(*sys.modules, file=sys.stderr))"
    res = subprocess.run([sys.executable, "-c", f"{show}; from ftsslab.cli import main; main()",
                          *argv], capture_output=True, text=True, timeout=60)
    assert res.returncode == (0 if args[0] == "merge" else 2), res.stderr[-500:]
    imported = set(res.stderr.split())
    assert {"ftsslab.cli.capture", "ftsslab.pcapng"} <= imported
    assert not {m for m in imported if m.split(".")[0] == "scapy" or m in (
        "ftsslab.lab.veth.backend", "ftsslab.cli.packets", "ftsslab.cli.lab", "ftsslab.layers")}
    if args[0] == "merge":  # it succeeded
        assert not {m for m in imported if m.split(".")[0] == "rich"}


@given(st.lists(st.integers(0, 2**40)), st.integers(0, 2**48), st.sampled_from(["Q", "I"]))
def test_shifted_adds_to_every_word_alone(values, by, typecode):
    """The big-integer addition behind the frames' addresses: no carry leaks between words."""
    if typecode == "I":
        values, by = [v % 2**31 for v in values], by % 2**31
    got = shifted(values, by, typecode)
    assert got.typecode == typecode and got.tolist() == [v + by for v in values]
