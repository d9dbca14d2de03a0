"""Replay: sans-IO schedule, a driver on a fake clock, files, and the sim backend."""

from __future__ import annotations

import gzip

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, PcapWriter

from ftsslab.lab.model import Endpoint, Link, Node, Scenario
from ftsslab.lab.replay import (
    ReplayReport,
    build_schedule,
    read_capture,
    replay,
    replay_onto,
    run_schedule,
)
from ftsslab.lab.sim import SimBackend
from ftsslab.pcapng import CaptureError

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
    assert build_schedule([]) == []


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


@pytest.mark.parametrize("writer", [PcapWriter, PcapNgWriter])
def test_read_pcap_and_pcapng(tmp_path, writer):
    path = tmp_path / "x.cap"
    w = writer(str(path))
    pkts = frames_for_files()
    for p in pkts:
        w.write(p)
    w.close()
    got = read_capture(path)
    assert [d for _, d in got] == [bytes(p) for p in pkts]
    assert [round(t - 50, 6) for t, _ in got] == [0, 0.25, 0.5, 0.75]
    assert read_capture(path.read_bytes()) == got                      # raw bytes
    gz = tmp_path / "x.cap.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_capture(str(gz)) == got
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
