"""The FTSS on real namespaces under faults no scenario plans for: fabric links cut under a
live TCP download, link state as the kernel reports it, and hostile frames at a daemon."""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.fast import ftss as wire
from ftsslab.ftss.core import MAX_FILE
from ftsslab.ftss.log import scan
from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import load_scenario_text
from ftsslab.lab.sim import SimBackend

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = (ROOT / "scenarios" / "ftss-http-kill.yaml").read_text().split("\nsteps:")[0] + "\n"
HTTP = "/tmp/ftsslab-http-cut-$FTSSLAB_LAB"  # one directory per lab: runs may overlap


def run_veth(text: str, tmp_path: Path):
    from ftsslab.lab.veth.backend import VethBackend

    path = tmp_path / "s.yaml"
    path.write_text(text)
    return Runner(load_scenario_text(text, str(path)), VethBackend()).run()


def failures(result) -> list:
    return [(o.what, o.detail) for o in result.outcomes if not o.passed]


def test_fabric_cuts_under_a_download_lose_nothing(tmp_path):
    """curl through the FTSS while server 2's fabric A, then server 1's, go down and come
    back: the download completes, same bytes, one TCP connection, no node process died."""
    steps = f"""steps:
  - exec: {{node: app2, cmd: [sh, -c, "rm -rf {HTTP} && mkdir -p {HTTP}/www && head -c 2000000 /dev/urandom > {HTTP}/www/big.bin"]}}
  - exec: {{node: app2, background: true, cmd: [sh, -c, "exec python3 -m http.server 8080 --bind 10.0.0.2 --directory {HTTP}/www"]}}
  - wait: 1.0
  - exec: {{node: app1, background: true, cmd: [sh, -c, "curl -sS --max-time 120 --limit-rate 400k -o {HTTP}/got.bin -w '%{{num_connects}}' http://10.0.0.2:8080/big.bin > {HTTP}/connects && touch {HTTP}/done"]}}
  - wait: 1.0
  - link: {{link: "srv2:fa ftss:a2", state: down}}
  - wait: 1.0
  - link: {{link: "srv1:fa ftss:a1", state: down}}
  - wait: 0.7
  - link: {{link: "srv2:fa ftss:a2", state: up}}
  - wait: 0.5
  - link: {{link: "srv2:fb ftss:b2", state: down}}
  - name: finished
    exec: {{node: app1, timeout: 120, cmd: [sh, -c, "while [ ! -f {HTTP}/done ]; do sleep 0.2; done; cmp {HTTP}/www/big.bin {HTTP}/got.bin && echo same-bytes connects=$(cat {HTTP}/connects)"]}}
  - exec: {{node: app1, cmd: [sh, -c, "rm -rf {HTTP}"]}}
expect:
  - command: {{step: finished, status: 0, contains: "same-bytes connects=1"}}
"""  # noqa: E501
    result = run_veth(TOPOLOGY + steps, tmp_path)
    assert not failures(result)
    assert [e.kind for e in result.events].count("link-down") == 3


CRAFTED = """name: cut
nodes:
  ftss: {kind: ftss, retry: 5}
  srv1: {kind: server, node_id: 1, retry: 5}
  srv2: {kind: server, node_id: 2, retry: 5}
  app1: {kind: host}
  app2: {kind: host}
links:
  - "srv1:fa ftss:a1"
  - "srv1:fb ftss:b1"
  - "srv2:fa ftss:a2"
  - "srv2:fb ftss:b2"
  - endpoints: [{node: app1, interface: eth0, mac: "02:00:00:00:00:01"}, {node: srv1, interface: stack}]
  - endpoints: [{node: app2, interface: eth0, mac: "02:00:00:00:00:02"}, {node: srv2, interface: stack}]
steps:
  - wait: 0.3
  - link: {link: "srv1:fa ftss:a1", state: down}
  - link: {link: "srv2:fa ftss:a2", state: down}
  - name: after-cut
    send: {from: app1:eth0, packet: 'Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")/IP()/UDP(dport=9)/b"cut"', count: 5, interval: 0.01}
  - wait: 0.3
  - check:
      expect:
        - received: {node: app2, match: 'UDP(dport=9)/b"cut"', count: 5}
        - absent: {link: "srv1:fa ftss:a1", match: 'UDP()/b"cut"'}
        - absent: {link: "srv2:fa ftss:a2", match: 'UDP()/b"cut"'}
"""  # noqa: E501


@pytest.mark.parametrize("backend", ["sim", "veth"])
def test_link_state_reaches_the_cores_at_once(backend, tmp_path):
    """With 5 s retransmission timeouts, only the kernel's word that fabric A is down can
    move both ends to fabric B within the 0.3 s the check allows (on veth the daemons
    used to read the root namespace's /sys and die of ENETDOWN instead)."""
    if backend == "sim":
        result = Runner(load_scenario_text(CRAFTED, "cut.yaml"), SimBackend()).run()
    else:
        result = run_veth(CRAFTED, tmp_path)
    assert not failures(result)


def test_link_monitor_sees_changes_inside_its_namespace():
    """netlink inside the namespace, not /sys/class/net of the root namespace."""
    import subprocess

    from ftsslab.lab.veth.linkstate import LinkMonitor
    from ftsslab.lab.veth.netns import call_in_netns

    ns = f"fltest{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "x0", "type", "veth", "peer", "name",
                        "x1"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "x0", "up"], check=True)
        mon = call_in_netns(ns, LinkMonitor, ["x0"])
        assert mon.up == {"x0": False}  # its peer is down: no carrier
        subprocess.run(["ip", "-n", ns, "link", "set", "x1", "up"], check=True)
        assert wait_change(mon) == [("x0", True)]
        subprocess.run(["ip", "-n", ns, "link", "set", "x1", "down"], check=True)
        assert wait_change(mon) == [("x0", False)]
        mon.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def wait_change(mon, timeout: float = 10.0) -> list:
    import select

    changes: list = []
    while not changes:
        ready, _, _ = select.select([mon], [], [], timeout)
        assert ready, "no netlink event"
        changes = mon.changes()
    return changes


# ---- a running daemon fed hostile frames ----------------------------------------------------

FUZZ = """name: fuzz
nodes:
  ftss: {kind: ftss}
  h1: {kind: host}
links:
  - endpoints: [{node: h1, interface: eth0, mac: "0e:fc:00:01:00:0a"}, {node: ftss, interface: a1}]
steps: []
"""

@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One FTSS daemon for the whole fuzz run (hypothesis examples share it)."""
    from ftsslab.lab.veth import names
    from ftsslab.lab.veth.backend import VethBackend

    path = tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"
    path.write_text(FUZZ)
    scenario = load_scenario_text(FUZZ, str(path))
    backend = VethBackend(capture=False)
    backend.up(scenario)
    try:
        yield backend, scenario.links[0].b.mac, names.lab_dir(backend.lab_id)
    finally:
        backend.down()


def stats_total(lab_dir: str) -> int:
    from ftsslab.lab.veth.control import control_request

    reply = control_request(lab_dir, "ftss", {"op": "stats"})
    assert reply["ok"] and reply["internal_errors"] == 0
    return sum(reply["stats"].values())


OPS = st.sampled_from(sorted(set(range(0x20)) | {0x7F, 0xFF}))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(OPS, st.binary(max_size=200), st.integers(0, 2**64 - 1),
                          st.booleans()), min_size=1, max_size=8))
def test_a_daemon_survives_arbitrary_ftss_frames(daemon, msgs):
    """Every frame is answered or counted by the running FTSS, it never dies, and its store
    never holds a record larger than the bound (a spool file's size plus its header)."""

    backend, ftss_mac, lab_dir = daemon
    before = stats_total(lab_dir)
    for op, body, offset, garble in msgs:
        if op == wire.FTSS_OP_WRITE:
            message = wire.build_write(1, body[:8] or b"n", body[8:], offset=offset)
        else:
            message = wire.build_ftss(op, body)
        frame = wire.build_ftss_frame(ftss_mac, "0e:fc:00:01:00:0a", message,
                                      d_id=0x010000, s_id=0x010100, ox_id=1)
        if garble:  # a damaged frame: the link unit must reject it, not trip over it
            frame = frame[:20] + bytes(b ^ 0x5A for b in frame[20:40]) + frame[40:]
        backend.send("h1:eth0", frame)
    deadline = time.monotonic() + 10
    while stats_total(lab_dir) - before < len(msgs):
        assert time.monotonic() < deadline, "frames neither answered nor counted"
        time.sleep(0.02)
    assert backend.problems() == []
    for seg in glob.glob(os.path.join(lab_dir, "ftss", "m0", "*")):
        records, _ = scan(Path(seg).read_bytes())
        assert all(len(r.payload) <= MAX_FILE + 300 for r in records)


def test_a_packet_ring_hands_frames_over_whole_and_in_order():
    """The daemons' receive ring: every frame, in order, with an 802.1Q tag the veth
    receive path took off put back, and its own transmissions not looped back."""
    import subprocess

    from ftsslab.lab.veth.netns import call_in_netns, disable_ipv6
    from ftsslab.lab.veth.ring import PacketRing

    ns = f"fltestring{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        call_in_netns(ns, disable_ipv6)  # else the kernel's own MLD report joins the frames
        for cmd in (["link", "add", "r0", "type", "veth", "peer", "name", "r1"],
                    ["link", "set", "r0", "up"], ["link", "set", "r1", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        ring = call_in_netns(ns, PacketRing, "r0", 1500, 1 << 20)
        tx = call_in_netns(ns, socket_on, "r1")
        frames = [bytes.fromhex("02000000000102000000000288b5") + b"%05d" % i for i in range(500)]
        frames.append(bytes.fromhex("020000000001020000000002810003ea8906") + bytes(60))
        for f in frames:
            tx.send(f)
        ring.send(frames[0])  # ours: never read back
        got: list[bytes] = []
        deadline = time.monotonic() + 10
        while len(got) < len(frames) and time.monotonic() < deadline:
            got += ring.frames(64)
        assert got == frames and ring.frames(64) == []
        tx.close()
        ring.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def socket_on(iface: str):
    import socket

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((iface, 0))
    return s
