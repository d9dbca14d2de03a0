"""Seed 003's shipped scenarios (``scenarios/san-*.yaml``), each on both backends: its own
expectations hold, and every frame of its capture is wire truth (check 24) -- each RoCEv2
frame's ICRC right by ftsslab's verifier, and tshark finds nothing malformed or suspect."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ftsslab.fast.roce import ROCEV2_UDP_PORT, verify_icrc
from ftsslab.lab.runner import Runner, RunResult
from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.sim import SimBackend
from ftsslab.san.memory import PHYS_BASE

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SAN = sorted(p.stem for p in SCENARIOS.glob("san-*.yaml"))
WARNINGS = "_ws.malformed || _ws.expert.severity >= warning"


def _roce(data: bytes) -> bool:
    return data[12:14] == b"\x08\x00" and data[23] == 17 and \
        int.from_bytes(data[36:38], "big") == ROCEV2_UDP_PORT


def _scanned(frame: bytes, random_data: bool) -> bytes:
    """What of a RoCEv2 frame may hold an address: all of it but the ICRC (a CRC is any 32
    bits), or with ``random_data`` (a run moving random bytes, where 00 00 5A 5A turns up by
    chance) a SEND's payload and the headers of the rest (BTH, RETH: 28 bytes)."""
    return frame[42:-4] if not random_data or frame[42] == 0x04 else frame[42:70]


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
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]


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
