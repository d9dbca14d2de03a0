"""``ftsslab report`` and the report beside a run's capture, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import ftsslab

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "pcaps" / "reference"


def test_report_of_a_capture_writes_one_html_file(tmp_path):
    out = tmp_path / "roce.html"
    res = ftsslab("report", str(REFERENCE / "roce.pcapng"), "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["report"] == str(out) and doc["frames"] == doc["dissected"] == 43
    assert doc["exchanges"] > 10 and doc["folds"] == [] and doc["damage"] is None
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count('class="arrow"') == 43


def test_the_default_output_is_beside_the_capture(tmp_path):
    cap = tmp_path / "tch.pcapng"
    cap.write_bytes((REFERENCE / "tch.pcapng").read_bytes())
    res = ftsslab("report", str(cap), "--dissect", "10")
    assert res.returncode == 0, res.stderr
    assert f"report: {cap.with_suffix('.html')}" in " ".join(res.stdout.split())
    said = " ".join(res.stderr.split())
    assert "17 frames were counted per conversation" in said and "first 3 and last 1" in said


def test_a_damaged_capture_is_drawn_up_to_the_damage_and_exits_2(tmp_path):
    cap = tmp_path / "cut.pcapng"
    cap.write_bytes((REFERENCE / "xap.pcapng").read_bytes()[:-7])
    res = ftsslab("report", str(cap))
    assert res.returncode == 2
    assert "damaged at byte" in res.stderr and "Traceback" not in res.stderr
    assert "25 captured" in cap.with_suffix(".html").read_text()


def test_what_is_not_a_capture_is_refused_with_exit_2(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    res = ftsslab("report", str(bad))
    assert res.returncode == 2 and "not a pcap or pcapng capture" in res.stderr
    assert not bad.with_suffix(".html").exists()
    res = ftsslab("report", str(tmp_path / "none.pcapng"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_run_writes_its_report_unless_told_not_to(tmp_path):
    scenario = str(REPO / "scenarios" / "ftss-guaranteed.yaml")
    cap = tmp_path / "g.pcapng"
    res = ftsslab("run", scenario, "-b", "sim", "-w", str(cap), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["report"] == str(cap.with_suffix(".html"))
    assert "ftss-guaranteed" in cap.with_suffix(".html").read_text()
    other = tmp_path / "elsewhere" / "r.html"
    assert ftsslab("run", scenario, "-b", "sim", "-w", str(cap), "--report",
                   str(other)).returncode == 0
    assert other.is_file()
    quiet = tmp_path / "q.pcapng"
    assert ftsslab("run", scenario, "-b", "sim", "-w", str(quiet), "--no-report").returncode == 0
    assert quiet.is_file() and not quiet.with_suffix(".html").exists()


def test_a_plain_pcap_from_elsewhere_is_drawn_by_its_addresses(tmp_path):
    """A classic pcap (no interfaces, no comments), as tcpdump writes it."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    cap = tmp_path / "ping.pcap"
    wrpcap(str(cap), [Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(id=1, seq=1),
                      Ether() / IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(type=0, id=1,
                                                                            seq=1)])
    res = ftsslab("report", str(cap), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["exchanges"] == 1  # the echo reply answers the request
    html = cap.with_suffix(".html").read_text()
    assert 'data-lane="192.0.2.1"' in html and 'data-lane="192.0.2.2"' in html
