"""A run's capture: one pcapng interface per link, comments saying which step caused a frame.

Interface ``node:if`` is the link's first endpoint (where the capture is taken);
its description names the whole link. Each frame's comment gives its direction
and step; a switch-table, link or process event becomes a comment on the first
frame after it (and every event is listed in the section header's comment).
"""

from __future__ import annotations

from pathlib import Path

from ..pcapng import Interface, PcapNgWriter
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
            comments = [f"{f.src} -> {f.dst}" + (f" [step {f.step}]" if f.step else "")
                        + (f" [{f.impair}]" if f.impair else "")]
            while pending and pending[0].time <= f.time:
                comments.append(event_text(pending.pop(0)))
            writer.packet(ifaces[f.link], f.data, EPOCH_NS + round(f.time * 1e9), comments)
    return len(frames)
