"""`ftsslab run/validate/merge/lab/replay` as users run them."""

import json
import subprocess
from pathlib import Path

import pytest

from tests import support
from tests.support import ftsslab

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
veth = pytest.mark.root

FAILING = """
name: bound-to-fail
nodes: {h1: {kind: host}, h2: {kind: host}, s1: {kind: switch}}
links: ["h1:eth0 s1:p1", "h2:eth0 s1:p2"]
steps:
  - send:
      from: h1:eth0
      packet: 'Ether(dst="02:00:00:00:00:99")/IP(src="10.0.0.1", dst="10.0.0.2")/UDP(dport=7)'
expect:
  - received: {node: h2, match: 'UDP(dport=8)', count: 1}
"""


@pytest.mark.tshark
def test_run_sim_json_and_capture(tmp_path):
    cap = tmp_path / "tc.pcapng"
    res = ftsslab("run", str(SCENARIOS / "table-change.yaml"), "--backend", "sim", "--json",
                  "-w", str(cap))
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["backend"] == "sim" and doc["passed"]
    assert doc["frames_per_link"] == {"c1:eth0 s1:p1": 8, "d1:eth0 s1:p2": 4, "d2:eth0 s1:p3": 4}
    assert [e["kind"] for e in doc["events"]] == ["table-add", "table-remove", "table-add"]
    tshark = subprocess.run(["tshark", "-r", str(cap), "-T", "fields", "-e",
                             "frame.interface_name", "-e", "frame.interface_description",
                             "-e", "frame.comment"], capture_output=True, text=True)
    lines = tshark.stdout.splitlines()
    assert len(lines) == 16
    assert lines[0].startswith("c1:eth0\tlink c1:eth0 <-> s1:p1")
    assert "[step first-half]" in lines[0] and "table-add" in lines[0]


def test_failing_expectation_exits_1_and_says_why(tmp_path):
    bad = tmp_path / "fail.yaml"
    bad.write_text(FAILING)
    res = ftsslab("run", str(bad), "--backend", "sim", "-w", str(tmp_path / "f.pcapng"))
    assert res.returncode == 1, res.stderr
    assert "FAIL" in res.stdout and "received 0" in res.stdout


@veth
def test_failing_scenario_on_veth_leaves_nothing(tmp_path):
    bad = tmp_path / "fail.yaml"
    bad.write_text(FAILING)
    before = support.lab_resources()
    res = ftsslab("run", str(bad), "-w", str(tmp_path / "f.pcapng"))
    assert res.returncode == 1
    assert "veth backend" in res.stdout  # the default on a root machine, and the summary says so
    assert support.leaked(before) == []


def test_validate_reports_every_error_with_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes: {h1: {kind: hots}}\nlinks: []\nsteps:\n  - wiat: 1\n")
    res = ftsslab("validate", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert f"{bad}:2:" in res.stderr and f"{bad}:5:" in res.stderr


def test_needs_kernel_refused_on_sim_with_exit_2():
    res = ftsslab("run", str(SCENARIOS / "switch-learning.yaml"), "--backend", "sim")
    assert res.returncode == 2
    assert "needs the veth backend" in res.stderr


@pytest.mark.tshark
def test_merge_keeps_interfaces_and_time_order(tmp_path):
    caps = []
    for name in ("table-change", "link-failure"):
        cap = tmp_path / f"{name}.pcapng"
        assert ftsslab("run", str(SCENARIOS / f"{name}.yaml"), "-b", "sim", "-w", str(cap),
                       "--json").returncode == 0
        caps.append(cap)
    merged = tmp_path / "merged.pcapng"
    res = ftsslab("merge", str(merged), *map(str, caps))
    assert res.returncode == 0, res.stderr
    out = subprocess.run(["tshark", "-r", str(merged), "-T", "fields", "-e", "frame.time_epoch",
                          "-e", "frame.interface_name"], capture_output=True, text=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    times = [float(t) for t, _ in rows]
    assert times == sorted(times) and len(rows) == 16 + 17
    assert {"c1:eth0", "h1:eth0"} <= {name for _, name in rows}


@veth
def test_interactive_lab_up_exec_replay_down(tmp_path):
    up = ftsslab("lab", "up", str(SCENARIOS / "table-change.yaml"))
    assert up.returncode == 0, up.stderr
    lab_id = up.stdout.split()[1]
    try:
        ls = json.loads(ftsslab("lab", "ls", "--json").stdout)
        assert any(r["lab"] == lab_id and r["alive"] for r in ls)
        ex = ftsslab("lab", "exec", "--lab", lab_id, "c1", "--", "ip", "-br", "addr", "show",
                     "eth0")
        assert ex.returncode == 0 and "10.0.0.1/24" in ex.stdout
        cap = tmp_path / "in.pcapng"
        assert ftsslab("run", str(SCENARIOS / "table-change.yaml"), "-b", "sim", "-w",
                       str(cap), "--json").returncode == 0
        rp = ftsslab("replay", str(cap), "--into", "c1:eth0", "--lab", lab_id, "--topspeed",
                     "--json")
        assert rp.returncode == 0, rp.stderr
        report = json.loads(rp.stdout)
        assert report["packets"] == 16 and report["failed"] == 0
    finally:
        down = ftsslab("lab", "down", "--lab", lab_id)
    assert down.returncode == 0, down.stderr
    assert lab_id not in ftsslab("lab", "ls", "--json").stdout
