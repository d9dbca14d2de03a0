"""RAID 142 on real files: a corrupted mirror member is detected and served from the other."""

import time
from pathlib import Path

import pytest

from ftsslab.expr import parse_packet
from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.veth import names
from ftsslab.lab.veth.control import control_request

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.root
DIALOG = ('Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")/IP(src="10.0.0.1",'
          ' dst="10.0.0.2")/UDP(sport=5000, dport=9)/b"dialog"')


def test_corrupted_member_is_served_from_its_mirror_and_repaired():
    from ftsslab.lab.veth.backend import VethBackend

    scenario = load_scenario(ROOT / "scenarios" / "ftss-retention.yaml")  # retains 30 s
    backend = VethBackend()
    backend.up(scenario)
    try:
        for _ in range(3):
            backend.send("app1:eth0", bytes(parse_packet(DIALOG)))
        backend.advance(0.5)
        store = Path(names.lab_dir(backend.lab_id)) / "ftss"
        (seg,) = sorted((store / "m0").glob("*.seg"))[-1:]
        data = bytearray(seg.read_bytes())
        assert data.count(b"dialog") >= 3
        for i in range(len(data) // 4, len(data)):  # wreck every record past the first quarter
            data[i] ^= 0x5A
        seg.write_bytes(bytes(data))
        backend.process("ftss", "kill")
        backend.process("ftss", "restart")
        backend.advance(1.0)
        since = time.time() - 60
        reply = control_request(names.lab_dir(backend.lab_id), "ftss",
                                {"op": "replay", "node_id": 2, "since": since})
        assert reply == {"ok": True, "replayed": 3}  # all three came back from member m1
        backend.advance(0.5)
        got = [f for f in backend.frames() if f.dst == "app2:eth0" and b"dialog" in f.data]
        assert len(got) == 6  # delivered once, and once more by the roll back
        assert seg.read_bytes() == (store / "m1" / seg.name).read_bytes()  # m0 repaired
    finally:
        backend.down()
