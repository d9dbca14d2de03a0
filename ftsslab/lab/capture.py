"""A run's capture: one pcapng interface per link, comments saying which step caused a frame.

Interface ``node:if`` is the link's first endpoint (where the capture is taken);
its description names the whole link. Each frame's comment gives its direction
and step; a switch-table, link or process event becomes a comment on the first
frame after it (and every event is listed in the section header's comment).
"""

from __future__ import annotations

from pathlib import Path

from ..pcapng import Interface, PcapNgWriter, read_packets
from .backend import CapturedFrame, Event
from .model import Scenario

EPOCH_NS = 1_700_000_000 * 10**9  # captures start at a fixed epoch: same run, same file


def link_interfaces(scenario: Scenario) -> dict[str, Interface]:
    return {
        link.name: Interface(link.a.name, f"link {link.a.name} <-> {link.b.name} (mtu {link.mtu})")
        for link in scenario.links
    }


def event_text(e: Event) -> str:
    return f"event t={e.time:.6f}s {e.node} {e.kind}: {e.detail}"


def write_capture(
    path: Path, scenario: Scenario, frames: list[CapturedFrame], events: list[Event], backend: str
) -> int:
    """Write the run's capture; returns the number of frames written."""
    ifaces = link_interfaces(scenario)
    pending = sorted(events, key=lambda e: e.time)
    header = [f"ftsslab scenario {scenario.name} ({scenario.path}) on {backend}"]
    header += [event_text(e) for e in pending]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        writer = PcapNgWriter(fh, comments=header)
        for iface in ifaces.values():
            writer.interface(iface)
        for f in sorted(frames, key=lambda f: f.time):
            comments = [f"{f.src} -> {f.dst}" + (f" [step {f.step}]" if f.step else "")]
            while pending and pending[0].time <= f.time:
                comments.append(event_text(pending.pop(0)))
            writer.packet(ifaces[f.link], f.data, EPOCH_NS + round(f.time * 1e9), comments)
    return len(frames)


def merge(out: Path, inputs: list[Path]) -> int:
    """Merge captures by timestamp, keeping interface names and packet comments."""
    packets = []
    for n, path in enumerate(inputs):
        for i, p in enumerate(read_packets(path)):
            packets.append((round(p.time * 10**9), n, i, p.interface or f"{path.name}#0",
                            path.name, p.data, p.comments))
    packets.sort(key=lambda p: p[:3])
    with out.open("wb") as fh:
        writer = PcapNgWriter(fh, comments=[f"merged by ftsslab from {len(inputs)} files"])
        for time_ns, _, _, name, source, data, comments in packets:
            writer.packet(Interface(name, f"from {source}"), data, time_ns, comments)
    return len(packets)
