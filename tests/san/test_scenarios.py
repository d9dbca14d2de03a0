"""Seed 003's shipped scenarios (``scenarios/san-*.yaml``), each on both backends: its own
expectations hold, and every frame of its capture is wire truth (check 24) -- each RoCEv2
frame's ICRC right by ftsslab's verifier, and tshark finds nothing malformed or suspect."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ftsslab.fast.roce import (
    EXT_HEADERS,
    HEADER_CHAINS,
    ROCEV2_UDP_PORT,
    SEND_PAYLOAD,
    verify_icrc,
)
from ftsslab.lab.runner import Runner, RunResult
from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.sim import SimBackend
from ftsslab.san.memory import PHYS_BASE
from tests.support import why_failed

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SAN = sorted(p.stem for p in SCENARIOS.glob("san-*.yaml"))
WARNINGS = "_ws.malformed || _ws.expert.severity >= warning"


def _roce(data: bytes) -> bool:
    return data[12:14] == b"\x08\x00" and data[23] == 17 and \
        int.from_bytes(data[36:38], "big") == ROCEV2_UDP_PORT


def _scanned(frame: bytes, random_data: bool) -> bytes:
    """What of a RoCEv2 frame may hold an address: what follows the BTH (whose opcode, P_Key,
    QPN and PSN are no addresses: a PSN of 0x005A5A is 00 00 5A 5A), but the ICRC (a CRC is any
    32 bits); with ``random_data`` (a run moving random bytes, where 00 00 5A 5A turns up by
    chance) the headers its opcode carries and a SEND's payload."""
    chain = HEADER_CHAINS.get(frame[42], ())
    if not random_data or SEND_PAYLOAD in chain:
        return frame[54:-4]
    return frame[54:54 + sum(EXT_HEADERS[name].size for name in chain)]


def assert_wire_truth(result: RunResult, tmp_path: Path, *, random_data: bool = False) -> None:
    """Check 24 over a run's capture, and check 15: no frame holds a physical address."""
    from tests.wireshark.oracle import TSHARK, write_pcap

    frames = [f.data for f in result.frames]
    roce = [f for f in frames if _roce(f)]
    assert roce, "the run put no RoCEv2 frame on the wire"
    bad_icrc = [i for i, f in enumerate(roce) if not verify_icrc(f)]
    assert not bad_icrc, f"{len(bad_icrc)} frames with a wrong ICRC, the first #{bad_icrc[0]}"
    # every PA of a lab's memory is PHYS_BASE (0x00005A5A_00000000) plus less than 256 MiB: its
    # upper four bytes are 00 00 5A 5A -- in no frame, big- or little-endian (check 15)
    top = (PHYS_BASE >> 32).to_bytes(4, "big")
    holding = [i for i, f in enumerate(roce)
               if top in (part := _scanned(f, random_data)) or top[::-1] in part]
    assert not holding, f"frame #{holding[0]} may hold a physical address"
    pcap = write_pcap(tmp_path / "run.pcapng", frames)
    got = subprocess.run([TSHARK, "-r", str(pcap), "-Y", WARNINGS, "-T", "fields",
                          "-e", "frame.number", "-e", "_ws.col.info"],
                         capture_output=True, text=True, timeout=600)
    assert got.returncode == 0 and got.stdout.strip() == "", got.stdout[:800] + got.stderr[:500]


def _passes(result: RunResult) -> None:
    assert result.passed, why_failed(result)


@pytest.mark.tshark
@pytest.mark.parametrize("name", SAN)
def test_scenario_passes_in_the_sim(name, tmp_path):
    result = Runner(load_scenario(SCENARIOS / f"{name}.yaml"), SimBackend()).run()
    _passes(result)
    assert_wire_truth(result, tmp_path)


@pytest.mark.root
@pytest.mark.tshark
@pytest.mark.parametrize("name", SAN)
def test_scenario_passes_on_veth(name, tmp_path):
    from ftsslab.lab.veth.backend import VethBackend

    result = Runner(load_scenario(SCENARIOS / f"{name}.yaml"), VethBackend()).run()
    _passes(result)
    assert_wire_truth(result, tmp_path)


def test_the_address_scan_sees_a_physical_address_but_not_a_psn():
    """Check 15's scan can fail: a PA in a RETH or in a SEND's payload is seen (random data
    or not); a PSN of 0x005A5A and random bytes in a READ response are not addresses."""
    from ftsslab.fast.roce import op

    def bth(code: int, psn: int) -> bytes:
        return bytes([code, 0, 0xFF, 0xFF, 0, 0, 0, 0x11]) + psn.to_bytes(4, "big")

    def seen(frame: bytes, random_data: bool) -> bool:
        part = _scanned(frame, random_data)
        return top in part or top[::-1] in part

    pa = (PHYS_BASE + 0x1234).to_bytes(8, "big")
    top = (PHYS_BASE >> 32).to_bytes(4, "big")
    head = bytes(42)
    write = head + bth(op("RC", "RDMA_WRITE_ONLY"), 1) + pa + bytes(8) + bytes(64) + bytes(4)
    send = head + bth(op("RC", "SEND_ONLY"), 1) + bytes(16) + pa[::-1] + bytes(4)
    acked = head + bth(op("RC", "ACKNOWLEDGE"), 0x5A5A) + bytes(4) + bytes(4)
    data = head + bth(op("RC", "RDMA_READ_RESPONSE_MIDDLE"), 1) + pa * 8 + bytes(4)
    assert [seen(f, True) for f in (write, send, acked, data)] == [True, True, False, False]
    assert [seen(f, False) for f in (write, send, acked, data)] == [True, True, False, True]
