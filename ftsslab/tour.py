"""The headline tour (`ftsslab tour`, `./run demo`): its stops, in order, in one place.

A later seed system joins the tour by adding one `Stop` line for its scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stop:
    name: str  # what `--only` selects
    claim: str  # which seed claim the stop shows
    intro: str  # one line: what the user is about to see
    scenario: str | None  # a scenario file relative to the repository; None: the packet tour

    @property
    def path(self) -> Path | None:
        return ROOT / self.scenario if self.scenario else None


STOPS = (
    Stop(
        "http-kill",
        "seed 000/004 claims 1-2: stored before it is acknowledged, so delivery survives a crash",
        "curl downloads 3 MB from http.server through the FTSS; the FTSS process is SIGKILLed"
        " mid-download and restarted: the same bytes arrive, on one TCP connection",
        "scenarios/ftss-http-kill.yaml",
    ),
    Stop(
        "link-failure",
        "seed 000: a failed fiber channel interface's packets go out on the redundant one",
        "fabric A of each server is cut mid-stream: traffic moves to fabric B (flag ALTPATH),"
        " nothing is lost or duplicated",
        "scenarios/ftss-link-failure.yaml",
    ),
    Stop(
        "nas-handoff",
        "seed 002 claims 1, 11: a switch as a virtual IP host; a live TCP connection handed"
        " between NAS devices without the client noticing",
        "curl downloads 16 MiB from the VIP; mid-download d1 hands the kernel TCP connection to"
        " d2 by TCH (TCP_REPAIR, XAP to the switch), and d2 hands it back: same bytes, no reset",
        "scenarios/nas-handoff.yaml",
    ),
    Stop(
        "san-keys",
        "seed 003 claims 1-5, 21-22: RDMA that a remote key guards to the byte",
        "two SAN endnodes on RoCEv2: b binds keys and advertises them; a's WRITEs with a key"
        " never allocated, retired, unbound or one byte out of range are NAKed (0x62) and 0"
        " bytes of b's memory change; the 5 bound bytes take a WRITE and a READ",
        "scenarios/san-keys.yaml",
    ),
    Stop(
        "i2o-export",
        "seed 001 claims 1, 19-23: a host's disks on the SAN by a direct call path",
        "host h initialises its IOPs and advertises them (not its private one); r1 writes 1 MiB"
        " to p1's disk over I2O BSA, h fetching the data by RDMA READ under r1's key; r2 reads"
        " it back by RDMA WRITE: the same SHA-256 on both remotes and on h's disk",
        "scenarios/i2o-export.yaml",
    ),
    Stop(
        "switch-learning",
        "the lab itself: real kernel stacks in namespaces, the switch seed 002 builds on",
        "three hosts ping and send a UDP burst through a learning switch: it floods the first"
        " frames, then forwards only to the port it learned",
        "scenarios/switch-learning.yaml",
    ),
    Stop(
        "packets",
        "seeds 000-004: every system's wire format, as Wireshark decodes it",
        "one crafted packet per protocol family (FTSS, XAP, TCH, RKey RDMA, I2O), each checked"
        " by tshark",
        None,
    ),
)
