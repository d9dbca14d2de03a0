"""tshark as the oracle: run the real tshark with ftsslab's Lua plugin and compare field by field.

Convention: a Lua dissector for Scapy layer ``L`` names its ProtoFields
``<prefix>.<scapy field name>``, where ``prefix`` is given per layer class by the
family's test (``ABBREV = {FTSSAck: "ftss.ack", ...}``). For every layer instance
in a Scapy-dissected packet (nested ones included, in document order) and every
field Scapy shows, tshark must show the same value in the same occurrence.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scapy.packet import Packet
from scapy.utils import rdpcap

from ftsslab.catalog import nested_layers
from ftsslab.pcapng import Interface, PcapNgWriter
from ftsslab.wireshark import lua_scripts
from tests import support

TSHARK = support.tshark()  # tests that run it are marked `tshark` (tests/conftest.py)

SEVERITY_WARN = 0x600000  # _ws.expert.severity: chat 0x200000, note 0x400000, warn, error 0x800000


@dataclass
class Shown:
    """One field occurrence in tshark's tree."""

    show: str
    value: str | None


@dataclass
class Frame:
    """tshark's view of one frame: every field occurrence by name, in tree order."""

    fields: dict[str, list[Shown]] = field(default_factory=lambda: defaultdict(list))
    protos: list[str] = field(default_factory=list)
    experts: list[tuple[int, str]] = field(default_factory=list)  # (severity, message)

    def first(self, name: str) -> str | None:
        got = self.fields.get(name)
        return got[0].show if got else None


def run_tshark(pcap: Path, *args: str) -> tuple[list[Frame], str]:
    """Dissect ``pcap`` with every ftsslab Lua script loaded; returns frames and stderr."""
    cmd = [TSHARK, "-r", str(pcap), "-T", "pdml"]
    for script in lua_scripts():
        cmd += ["-X", f"lua_script:{script}"]
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return parse_pdml(res.stdout), lua_stderr(res.stderr)


def tshark_fields(pcap: Path, display_filter: str, fields: list[str]) -> list[dict[str, str]]:
    """``tshark -T fields`` with ftsslab's Lua scripts: one dict per frame ``display_filter``
    selects, ``fields`` as keys ("" where a frame lacks one)."""
    cmd = [TSHARK, "-r", str(pcap), "-Y", display_filter, "-T", "fields", "-E", "separator=|"]
    for script in lua_scripts():
        cmd += ["-X", f"lua_script:{script}"]
    for f in fields:
        cmd += ["-e", f]
    shown = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return [dict(zip(fields, line.split("|"), strict=True)) for line in shown.stdout.splitlines()]


def lua_stderr(stderr: str) -> str:
    """tshark's stderr without the harmless 'Running as user root' warning."""
    return "\n".join(
        line for line in stderr.splitlines() if line.strip() and "Running as user" not in line
    )


def parse_pdml(text: str) -> list[Frame]:
    frames = []
    for pkt in ET.fromstring(text).iter("packet"):
        frame = Frame()
        for proto in pkt.iter("proto"):
            frame.protos.append(proto.get("name", ""))
        for el in pkt.iter("field"):
            name = el.get("name", "")
            frame.fields[name].append(Shown(el.get("show", ""), el.get("value")))
            if name == "_ws.expert":
                sev = next(
                    (
                        int(c.get("show", "0"))
                        for c in el.iter("field")
                        if c.get("name") == "_ws.expert.severity"
                    ),
                    0,
                )
                frame.experts.append((sev, el.get("showname", "")))
        frames.append(frame)
    return frames


def write_pcap(path: Path, packets: Iterable[Packet | bytes]) -> Path:
    with path.open("wb") as fh:
        writer = PcapNgWriter(fh)
        for i, pkt in enumerate(packets):
            writer.packet(Interface("oracle"), bytes(pkt), 1_700_000_000_000_000_000 + i * 1000)
    return path


def _as_int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def values_agree(scapy_value, shown: Shown) -> bool:
    """Scapy's machine value against tshark's shown value (ints, addresses, bytes)."""
    if isinstance(scapy_value, bytes):
        return (shown.value or "").lower() == scapy_value.hex()
    if isinstance(scapy_value, str):
        return shown.show.lower() == scapy_value.lower()
    try:
        number = int(scapy_value)  # ints, bools, FlagValue, enum ints
    except (TypeError, ValueError):
        return str(scapy_value) == shown.show
    got = _as_int(shown.show)
    if got is None and shown.value is not None:
        got = int(shown.value, 16) if shown.value else None
    return got == number


def _is_packet_valued(value) -> bool:
    if isinstance(value, Packet):
        return True
    return isinstance(value, list | tuple) and any(isinstance(v, Packet) for v in value)


def compare(
    pkt: Packet,
    frame: Frame,
    abbrev: Mapping[type[Packet], str],
    skip: Mapping[str, str] | None = None,
) -> list[str]:
    """Mismatches between Scapy's fields and tshark's for the layers named in ``abbrev``.

    ``skip`` maps "Layer.field" to the reason it is not compared (kept explicit).
    """
    skip = skip or {}
    seen: dict[str, int] = defaultdict(int)
    problems = []
    for layer in nested_layers(pkt):
        prefix = abbrev.get(type(layer))
        if prefix is None:
            continue
        for fld in layer.fields_desc:
            name = fld.name
            if f"{type(layer).__name__}.{name}" in skip:
                continue
            cond = getattr(fld, "cond", None)
            if cond is not None and not cond(layer):
                continue
            value = layer.getfieldval(name)
            if _is_packet_valued(value) or value is None:
                continue
            key = f"{prefix}.{name}"
            index = seen[key]
            seen[key] += 1
            got = frame.fields.get(key, [])
            if index >= len(got):
                problems.append(
                    f"{key}: tshark has no occurrence #{index + 1} "
                    f"(Scapy {type(layer).__name__}.{name} = {value!r})"
                )
            elif not values_agree(value, got[index]):
                problems.append(f"{key}[{index}]: Scapy {value!r} != tshark {got[index].show!r}")
    return problems


def cleanliness(frame: Frame) -> list[str]:
    """Malformed marks, Lua errors and expert items at warning or above."""
    problems = []
    if "_ws.malformed" in frame.protos or "_ws.malformed" in frame.fields:
        problems.append("_ws.malformed")
    if "_ws.lua.error" in frame.fields or "_ws.lua" in frame.protos:
        problems.append("Lua error: " + (frame.first("_ws.lua.error") or ""))
    problems += [f"expert: {msg}" for sev, msg in frame.experts if sev >= SEVERITY_WARN]
    return problems


def assert_agrees(
    tmp_path: Path,
    packets: list[Packet],
    abbrev: Mapping[type[Packet], str],
    skip: Mapping[str, str] | None = None,
    pcap: Path | None = None,
) -> list[Frame]:
    """The whole oracle for a list of packets: clean dissection and equal fields."""
    if pcap is None:
        pcap = write_pcap(tmp_path / "oracle.pcapng", packets)
    frames, stderr = run_tshark(pcap)
    assert stderr == "", f"tshark/Lua stderr: {stderr}"
    assert len(frames) == len(packets)
    failures = []
    for i, (pkt, frame) in enumerate(zip(packets, frames, strict=True), start=1):
        problems = cleanliness(frame) + compare(pkt, frame, abbrev, skip)
        if problems:
            failures.append(f"frame {i} ({pkt.summary()}):\n    " + "\n    ".join(problems))
    assert not failures, "\n".join(failures[:20])
    return frames


def reference(family: str) -> tuple[Path, list[Packet]]:
    path = Path(__file__).resolve().parents[2] / "pcaps" / "reference" / f"{family}.pcapng"
    import ftsslab.layers  # noqa: F401

    return path, list(rdpcap(str(path)))
