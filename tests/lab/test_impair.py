"""Link impairments: the loader, the sim's seeded model, and veth's shim measured.

The veth tests measure at the receiving host's own packet socket (kernel timestamps), never
at the shim's capture: what arrived is checked against what was set, and against the sim's
decisions for the same seed (the same frames in the same order get the same fates).
Frames use the IEEE local experimental EtherType, which the hosts' kernels ignore: nothing
else crosses an impaired direction to shift its random draws.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter

import pytest

from ftsslab.lab.backend import BackendError
from ftsslab.lab.capture import write_capture
from ftsslab.lab.impair import Direction, bucket, direction_seed, flip
from ftsslab.lab.model import NO_IMPAIRMENT, Impairment, SetImpairment
from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import ScenarioErrors, load_scenario_text
from ftsslab.lab.sim import DEFAULT_LATENCY, SimBackend
from ftsslab.pcapng import read_packets
from tests import support

MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
LINK = "h1:eth0 h2:eth0"
EXP = b"\x88\xb5"


def pair(impair: str = "{}", steps: str = "[]", seed: str = "") -> str:
    return f"""
name: impair-test
{seed}
nodes: {{h1: {{kind: host}}, h2: {{kind: host}}}}
links:
  - endpoints: [{{node: h1, interface: eth0, mac: "{MAC1}", ipv4: 10.0.0.1/24}},
                {{node: h2, interface: eth0, mac: "{MAC2}", ipv4: 10.0.0.2/24}}]
    impair: {impair}
steps: {steps}
"""


def frame(i: int, size: int = 60, sent_ns: int = 0) -> bytes:
    """h1 -> h2, numbered ``i`` (with its CRC: no bit flip turns one frame into another);
    ``sent_ns`` is when it was sent (CLOCK_REALTIME)."""
    head = bytes.fromhex(MAC2.replace(":", "") + MAC1.replace(":", "")) + EXP
    number = struct.pack("!I", i)
    return head + number + struct.pack("!IQ", zlib.crc32(number), sent_ns).ljust(size - 18, b"\0")


def index(data: bytes) -> int:
    return struct.unpack_from("!I", data, 14)[0]


def sim_lab(text: str) -> SimBackend:
    b = SimBackend()
    b.up(load_scenario_text(text))
    return b


def sim_run(text: str, frames: list[bytes], interval: float = 0.0,
            ) -> tuple[SimBackend, list[tuple[float, bytes]]]:
    """Send ``frames`` from h1 at ``interval``; (the lab, h2's (latency, frame) in arrival order).
    A latency is counted from the frame's send, without the link's own latency (NaN for a
    frame whose number was corrupted)."""
    b = sim_lab(text)
    sent = {}
    for n, f in enumerate(frames):
        if n and interval:
            b.advance(interval)
        sent.setdefault(index(f), b.now())
        b.send("h1:eth0", f)
    b.advance(30.0)
    got = [(t - sent.get(index(f), math.nan) - DEFAULT_LATENCY, f)
           for t, _, f in b._nodes["h2"].core.received]
    return b, got


def within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """``count`` of ``n`` trials at probability ``p`` is within ``sigmas`` standard deviations."""
    return abs(count - n * p) <= sigmas * (n * p * (1 - p)) ** 0.5


# ---- the loader ---------------------------------------------------------------------------


def test_units_both_directions_and_per_endpoint():
    sc = load_scenario_text(pair('{loss: 1%, delay: 5ms, jitter: 200us, reorder: 0.5, '
                                 'duplicate: "2 %", corrupt: 0.1%, rate: 1.5mbit}'))
    imp = Impairment(loss=0.01, delay=0.005, jitter=0.0002, reorder=0.005, duplicate=0.02,
                     corrupt=0.001, rate=1_500_000)
    assert sc.links[0].impair == (imp, imp) and sc.seed == 0 and sc.links[0].seed is None
    sc = load_scenario_text(pair('{"h2:eth0": {delay: 0.25, rate: 1gbit}}', seed="seed: 9"))
    assert sc.links[0].impair == (NO_IMPAIRMENT, Impairment(delay=0.25, rate=10**9))
    assert sc.seed == 9 and sc.impaired_links() == {LINK}
    sc = load_scenario_text(pair("{}", '[{impair: {link: "h2:eth0 h1:eth0", set: '
                                       '{"h1:eth0": {loss: 100}}}}, '
                                       '{impair: {link: "h1:eth0 h2:eth0", clear: true}}]'))
    assert sc.links[0].impair == (NO_IMPAIRMENT, NO_IMPAIRMENT)
    first, second = sc.steps
    assert isinstance(first, SetImpairment) and first.link == LINK
    assert first.impair == (Impairment(loss=1.0), NO_IMPAIRMENT)
    assert second.impair == (NO_IMPAIRMENT, NO_IMPAIRMENT)
    assert sc.impaired_links() == {LINK}   # a step makes the link impaired from the start


def test_a_tap_link_cannot_be_impaired():
    text = """
name: tap
nodes: {ftss: {kind: ftss}, srv1: {kind: server, node_id: 1}, app1: {kind: host}}
links:
  - "srv1:fa ftss:a1"
  - "srv1:fb ftss:b1"
  - endpoints: [app1:eth0, srv1:stack]
    impair: {loss: 1%}
steps:
  - impair: {link: "app1:eth0 srv1:stack", set: {delay: 1ms}}
  - impair: {link: "srv1:fa ftss:a1", set: {delay: 1ms}}
"""
    with pytest.raises(ScenarioErrors) as info:
        load_scenario_text(text, "tap.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 2, lines
    assert all("srv1:stack is a server's TAP: its link cannot be impaired" in x for x in lines)
    assert lines[0].startswith("tap.yaml:8: links[2].impair") and ":10: steps[0]" in lines[1]


def test_validate_exits_2_with_every_impairment_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(pair("{loss: 101%, delay: 1ms, jitter: 2ms, rate: 10}",
                        '[{impair: {link: "h1:eth0 h2:eth0", set: {reorder: 1%}}}]'))
    res = support.ftsslab("validate", str(bad))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [x for x in (res.stdout + res.stderr).splitlines() if str(bad) in x]
    assert len(lines) == 4, lines   # all at once: loss, jitter, rate, reorder
    assert any("impair.loss: 101% is out of range" in x for x in lines)
    assert any("impair.jitter: jitter 2ms is more than the delay (1ms)" in x for x in lines)
    assert any("impair.rate: expected a rate, got 10: a rate needs its unit" in x for x in lines)
    assert any("set.reorder: reorder needs a delay" in x for x in lines)


# ---- the model both backends share --------------------------------------------------------


def test_direction_seeds_are_stable_and_distinct():
    assert direction_seed(0, LINK, "h1:eth0") == direction_seed(0, LINK, "h1:eth0")
    seeds = {direction_seed(s, LINK, ep) for s in (0, 1) for ep in ("h1:eth0", "h2:eth0")}
    assert len(seeds) == 4
    # fixed across processes and Python's hash salt: the value is part of the format
    out = subprocess.run([sys.executable, "-c", "from ftsslab.lab.impair import direction_seed;"
                          f"print(direction_seed(0, {LINK!r}, 'h1:eth0'))"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "random"}).stdout
    assert int(out) == direction_seed(0, LINK, "h1:eth0")


def test_bucket_sizes():
    assert bucket(10**7, 1500) == (1518, 1_250_000)       # 1 ms is less than a frame; 1 s
    assert bucket(10**9, 1500) == (125_000, 1_518_000)    # 1 ms; 1000 frames cap the queue
    assert bucket(10**4, 1500) == (1518, 3036)            # at least 2 frames queue


# ---- the sim ------------------------------------------------------------------------------


def test_sim_loss_is_binomial_and_lost_frames_are_captured_not_delivered():
    n = 2000
    b, got = sim_run(pair('{"h1:eth0": {loss: 10%}}'), [frame(i) for i in range(n)])
    arrived = {index(f) for _, f in got}
    lost = set(range(n)) - arrived
    assert within(len(lost), n, 0.1), len(lost)
    frames = b.frames()
    assert len(frames) == n   # each frame captured once, when it entered
    assert {index(f.data) for f in frames if f.impair == "lost"} == lost
    assert all(f.delivered == (f.impair != "lost") for f in frames)


def test_sim_is_deterministic_per_seed_and_link_seed_overrides():
    steps = '[{send: {from: h1:eth0, packet: \'Ether(dst="02:00:00:00:00:02")/IP(dst="10.0.0.9")' \
        '/UDP()/b"x"\', count: 300, interval: 0.001}}]'
    imp = '{loss: 20%, delay: 2ms, jitter: 1ms, duplicate: 5%, corrupt: 5%, rate: 5mbit}'

    def run(seed: str, imp: str = imp):
        r = Runner(load_scenario_text(pair(imp, steps, seed)), SimBackend()).run()
        return r.frames, r.events

    first = run("seed: 5")
    assert first == run("seed: 5")
    assert first != run("seed: 6")
    lost = [f.impair for f in first[0]]
    assert "lost" in lost and "duplicate" in lost
    assert first == run("", imp + "\n    seed: 5")   # the link's own seed, same value


def test_sim_delay_and_jitter_without_reordering():
    n = 1000
    b, got = sim_run(pair('{"h1:eth0": {delay: 5ms, jitter: 1ms}}'),
                     [frame(i) for i in range(n)], interval=0.002)
    lat = [t for t, _ in got]
    assert len(lat) == n and min(lat) >= 0.004 - 1e-9 and max(lat) <= 0.006 + 1e-9
    assert min(lat) < 0.0042 and max(lat) > 0.0058   # spread over the whole range
    assert abs(sum(lat) / n - 0.005) < 0.0001
    # back to back, jitter alone keeps the order: a frame never leaves before the one ahead
    _, got = sim_run(pair('{"h1:eth0": {delay: 5ms, jitter: 4ms}}'), [frame(i) for i in range(n)])
    assert [index(f) for _, f in got] == list(range(n))
    assert all(t >= 0.001 - 1e-9 for t, _ in got)


def test_sim_reorder_skips_the_delay():
    n = 1000
    _, got = sim_run(pair('{"h1:eth0": {delay: 10ms, reorder: 20%}}'),
                     [frame(i) for i in range(n)], interval=0.001)
    early = [index(f) for t, f in got if t < 0.001]
    assert within(len(early), n, 0.2), len(early)
    assert all(abs(t - 0.010) < 1e-9 for t, _ in got if t >= 0.001)
    order = [index(f) for _, f in got]
    assert order != sorted(order) and sorted(order) == list(range(n))


def test_sim_duplicate_and_corrupt():
    n = 2000
    b, got = sim_run(pair('{"h1:eth0": {duplicate: 10%, corrupt: 10%}}'),
                     [frame(i) for i in range(n)])
    dups = len(got) - n
    assert within(dups, n, 0.1), dups
    sent = {frame(i) for i in range(n)}
    assert Counter(f for _, f in got if f in sent).most_common(1)[0][1] == 2
    captured = b.frames()
    assert sum("duplicate" in f.impair for f in captured) == dups
    corrupt = [f for f in captured if "corrupt" in f.impair]
    assert within(len(corrupt), n + dups, 0.1), len(corrupt)
    for f in corrupt:   # one bit flipped after the Ethernet header; the capture shows it
        bit = int(f.impair.split("bit ")[1].split()[0])
        assert bit >= 14 * 8 and f.data not in sent and flip(f.data, bit) in sent
    delivered = Counter(f for _, f in got)
    assert all(delivered[f.data] for f in corrupt)   # h2 got the corrupted bytes


def test_sim_rate_is_a_token_bucket_with_a_bounded_queue():
    _, got = sim_run(pair('{"h1:eth0": {rate: 10mbit}}'), [frame(i, 1000) for i in range(100)])
    lat = [t for t, _ in got]
    assert lat[0] == pytest.approx(0) and len(lat) == 100   # the bucket starts full (1518 B)
    gaps = [round(b - a, 9) for a, b in zip(lat, lat[1:], strict=False)]
    assert gaps[0] == 0.0003856            # the 518 bytes left in the bucket, then
    assert set(gaps[1:]) == {0.0008}       # 1000 bytes per 8e-4 s: 10 Mbit/s
    b, got = sim_run(pair('{"h1:eth0": {rate: 1mbit}}'), [frame(i, 1000) for i in range(200)])
    full = [f for f in b.frames() if f.impair == "lost: rate queue full"]
    assert len(got) + len(full) == 200 and 120 <= len(got) <= 130   # 125000-byte queue


def test_sim_link_down_loses_what_the_delay_holds():
    b = sim_lab(pair('{"h1:eth0": {delay: 50ms}}'))
    for i in range(5):
        b.send("h1:eth0", frame(i))
    b.advance(0.01)
    b.set_link(LINK, False)
    b.advance(0.1)
    assert b._nodes["h2"].core.received == []
    assert [f.impair for f in b.frames()] == ["lost: link down"] * 5


UDP9 = '\'Ether(dst="02:00:00:00:00:02")/IP(dst="10.0.0.9")/UDP(dport=9)\''
STEPS = f"""
  - send: {{from: h1:eth0, packet: {UDP9}, count: 20}}
  - impair: {{link: "h1:eth0 h2:eth0", set: {{"h1:eth0": {{loss: 100%}}}}}}
  - send: {{from: h1:eth0, packet: {UDP9}, count: 20}}
  - check: {{name: all-lost, expect: [received: {{node: h2, match: 'UDP(dport=9)', count: 20}}]}}
  - impair: {{link: "h1:eth0 h2:eth0", set: {{"h1:eth0": {{delay: 1s}}}}}}
  - send: {{from: h1:eth0, packet: {UDP9}}}
  - check: {{name: delayed, expect: [received: {{node: h2, match: 'UDP(dport=9)', count: 20}}]}}
  - wait: 1.5
  - check: {{name: arrived, expect: [received: {{node: h2, match: 'UDP(dport=9)', count: 21}}]}}
  - impair: {{link: "h1:eth0 h2:eth0", clear: true}}
  - send: {{from: h1:eth0, packet: {UDP9}, count: 20}}
expect:
  - received: {{node: h2, match: 'UDP(dport=9)', count: 41}}
"""


def test_sim_impair_step_changes_it_mid_run():
    r = Runner(load_scenario_text(pair("{}", STEPS)), SimBackend()).run()
    assert r.passed, [o for o in r.outcomes if not o.passed]
    assert Counter(f.impair for f in r.frames if f.src == "h1:eth0") == {"": 41, "lost": 20}
    changes = [e for e in r.events if e.kind == "impair"]
    assert [e.detail for e in changes] == [
        "h1:eth0 -> h2:eth0: loss 100%; h2:eth0 -> h1:eth0: none",
        "h1:eth0 -> h2:eth0: delay 1000ms; h2:eth0 -> h1:eth0: none",
        "h1:eth0 -> h2:eth0: none; h2:eth0 -> h1:eth0: none"]


def test_sim_refuses_to_impair_a_link_the_scenario_does_not():
    b = sim_lab(pair())
    with pytest.raises(BackendError, match="not impaired by the scenario"):
        b.impair(LINK, (Impairment(loss=0.5), NO_IMPAIRMENT))


def test_the_capture_file_says_what_the_link_did(tmp_path):
    text = pair('{"h1:eth0": {loss: 50%, duplicate: 50%}}')
    b, _ = sim_run(text, [frame(i) for i in range(20)])
    n = write_capture(tmp_path / "c.pcapng", load_scenario_text(text), b.frames(), b.events(),
                      "sim")
    comments = [" ".join(p.comments) for p in read_packets(tmp_path / "c.pcapng")]
    assert len(comments) == n == len(b.frames())
    assert any(c.endswith("[lost]") for c in comments)
    assert any(c.endswith("[duplicate]") for c in comments)


def test_direction_draws_once_per_set_parameter():
    """Adding a parameter that is 0 changes no decision: both backends draw the same."""
    data = [frame(i) for i in range(200)]
    a = Direction(1, Impairment(loss=0.3))
    b = Direction(1, Impairment(loss=0.3, duplicate=0.0, corrupt=0.0))
    assert [a.decide(f, 0) for f in data] == [b.decide(f, 0) for f in data]


# ---- veth ---------------------------------------------------------------------------------


@pytest.fixture
def labs():
    """Make veth labs with ``labs(text)``; all are removed afterwards and leaks asserted."""
    from ftsslab.lab.veth.backend import VethBackend

    before = support.lab_resources()
    made = []

    def make(text: str):
        b = VethBackend()
        made.append(b)
        b.up(load_scenario_text(text))
        return b

    yield make
    for b in made:
        b.down()
    left = support.leaked(before)
    assert not left, "leaked:\n" + "\n".join(map(str, left))


def _receiver(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)   # SO_RCVBUFFORCE
    s.setsockopt(socket.SOL_SOCKET, 35, 1)         # SO_TIMESTAMPNS
    s.bind((ifname, 0))
    s.settimeout(0.5)
    return s


def received(sock: socket.socket, quiet: float = 0.5) -> list[tuple[int, bytes]]:
    """(kernel receive time ns, frame) until nothing came for ``quiet`` seconds."""
    out = []
    sock.settimeout(quiet)
    while True:
        try:
            data, anc, _, _ = sock.recvmsg(2048, 64)
        except TimeoutError:
            return out
        sec, nsec = struct.unpack("qq", anc[0][2][:16])
        out.append((sec * 10**9 + nsec, data))


def h2_socket(b):
    from ftsslab.lab.veth.netns import call_in_netns

    return call_in_netns(b.namespace("h2"), _receiver, "eth0")


@pytest.mark.root
def test_veth_loss_and_duplicates_are_the_sims_decisions(labs):
    n = 2000
    text = pair('{"h1:eth0": {loss: 10%, duplicate: 5%}}', seed="seed: 11")
    _, expected = sim_run(text, [frame(i) for i in range(n)])
    b = labs(text)
    sock = h2_socket(b)
    try:
        for i in range(n):
            b.send("h1:eth0", frame(i))
        got = received(sock)
    finally:
        sock.close()
    arrived = [index(f) for _, f in got]
    lost = n - len(set(arrived))
    assert within(lost, n, 0.1), lost
    assert Counter(arrived) == Counter(index(f) for _, f in expected)   # frame for frame
    captured = [f for f in b.frames() if f.src == "h1:eth0"]
    assert {index(f.data) for f in captured if f.impair == "lost"} == set(range(n)) - set(arrived)


@pytest.mark.root
def test_veth_delay_is_never_shorter_than_set(labs):
    """Each frame's latency at h2 is at least the delay the sim draws for it (same seed),
    and not far above it, even on a loaded machine."""
    n, spacing = 50, 0.012      # more than 2 x jitter apart: no frame waits for the one ahead
    text = pair('{"h1:eth0": {delay: 20ms, jitter: 5ms}}')
    _, expected = sim_run(text, [frame(i) for i in range(n)], interval=spacing)
    want = [t for t, _ in expected]
    assert min(want) < 0.017 and max(want) > 0.023   # the jitter spreads the delays
    b = labs(text)
    sock = h2_socket(b)
    try:
        for i in range(n):
            b.send("h1:eth0", frame(i, sent_ns=time.time_ns()))
            time.sleep(spacing)
        got = received(sock)
    finally:
        sock.close()
    assert [index(f) for _, f in got] == list(range(n))
    lat = [(t - struct.unpack_from("!Q", f, 22)[0]) / 1e9 for t, f in got]
    assert all(lo >= w - 50e-6 for lo, w in zip(lat, want, strict=True)), \
        [(round(x, 5), round(w, 5)) for x, w in zip(lat, want, strict=True) if x < w]
    over = sorted(x - w for x, w in zip(lat, want, strict=True))
    assert over[n // 2] < 0.01 and over[-1] < 0.25, over   # median, worst


@pytest.mark.root
def test_veth_rate_never_exceeds_the_set_rate(labs):
    n, size, rate = 200, 1000, 10**7
    b = labs(pair('{"h1:eth0": {rate: 10mbit}}'))
    sock = h2_socket(b)
    try:
        for i in range(n):
            b.send("h1:eth0", frame(i, size))
        got = received(sock)
    finally:
        sock.close()
    assert len(got) == n   # a 1 s queue at the rate holds them all
    span = (got[-1][0] - got[0][0]) / 1e9
    measured = (n - 1) * size * 8 / span   # the first frame leaves at once (full bucket)
    assert 0.5 * rate < measured <= 1.02 * rate, measured


@pytest.mark.root
def test_veth_impair_step_changes_it_mid_run():
    """The sim's scenario above, on veth: the same checks pass, the same frames are lost."""
    from ftsslab.lab.veth.backend import VethBackend

    before = support.lab_resources()
    r = Runner(load_scenario_text(pair("{}", STEPS)), VethBackend()).run()
    assert r.passed, [o for o in r.outcomes if not o.passed]
    assert Counter(f.impair for f in r.frames if f.src == "h1:eth0") == {"": 41, "lost": 20}
    assert [e.kind for e in r.events] == ["impair"] * 3
    assert not support.leaked(before)


@pytest.mark.root
def test_veth_shim_is_recorded_first_and_found_after_its_owner_is_killed():
    """The owner of a lab with an impaired link is SIGKILLed: the state file names the
    shim's process and namespace, and removing the lab (what `lab clean` does for a dead
    owner) leaves nothing."""
    from ftsslab.lab.veth import names, state

    before = support.lab_resources()
    code = ("import sys, time\n"
            "from ftsslab.lab.scenario import load_scenario_text\n"
            "from ftsslab.lab.veth.backend import VethBackend\n"
            "b = VethBackend()\n"
            "b.up(load_scenario_text(sys.stdin.read()))\n"
            "print(b.lab_id, flush=True)\n"
            "time.sleep(120)\n")
    owner = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        owner.stdin.write(pair('{delay: 1ms}'))
        owner.stdin.close()
        lab = owner.stdout.readline().strip()
        assert names.LAB_ID_RE.match(lab), lab
        st = state.load(lab)
        shim = st.processes["link-0"]
        assert shim["pid"] and os.path.exists(f"/proc/{shim['pid']}")
        assert f"fl{lab}-link-0" in names.list_netns()
        assert {r.kind for r in support.lab_resources() - before if r.lab == lab} == \
            {"netns", "process"}
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    removed = state.remove_lab(lab, state.load(lab))
    assert f"process {shim['pid']}" in removed and f"netns fl{lab}-link-0" in removed
    assert not support.leaked(before)
