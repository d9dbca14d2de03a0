"""The `ftsslab` command as users run it: real processes, exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "pcaps" / "reference"


def ftsslab(*args, cwd=None):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-c", "from ftsslab.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def assert_one_line_error(res, *needles):
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0]


def test_layers_json_lists_every_family_with_fields_and_bindings():
    res = ftsslab("layers", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert {r["family"] for r in rows} == {"fc", "ftss", "xap", "tch", "roce", "i2o"}
    fields = {r["layer"]: {f["name"] for f in r["fields"]} for r in rows}
    assert {"msg_id", "status"} <= fields["FTSSAck"]
    assert {"nonce", "cluster_id"} <= fields["XAP"]
    assert "crc" in fields["FC"]
    fcoe = next(r for r in rows if r["layer"] == "FCoE")
    assert any(b["lower"] == "Ether" and "0x8906" in b["when"] for b in fcoe["bindings"])


def test_craft_then_inspect_json_round_trip(tmp_path):
    out = tmp_path / "c.pcapng"
    res = ftsslab(
        "craft",
        'Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")/IP(src="10.9.0.1",'
        ' dst="10.9.0.2")/UDP(sport=7, dport=9)/b"abc"',
        "-o",
        str(out),
        "--count",
        "3",
    )
    assert res.returncode == 0, res.stderr
    res = ftsslab("inspect", str(out), "--json", "--layer", "UDP")
    assert res.returncode == 0, res.stderr
    pkts = json.loads(res.stdout)
    assert len(pkts) == 3
    udp = next(layer for layer in pkts[0]["layers"] if layer["layer"] == "UDP")
    assert udp["fields"] == {"sport": 7, "dport": 9, "len": 11, "chksum": udp["fields"]["chksum"]}


def test_inspect_tree_shows_comments_and_interface_names():
    res = ftsslab("inspect", str(REFERENCE / "ftss.pcapng"), "--hex")
    assert res.returncode == 0, res.stderr
    assert "ref-ftss" in res.stdout  # interface name from the pcapng IDB
    assert "# FTSS" in res.stdout  # packet comment
    assert "0000" in res.stdout  # hex dump


@pytest.mark.parametrize(
    "args, needles",
    [
        (["inspect", "/nonexistent.pcap"], ["no such file"]),
        (["inspect", __file__], ["not a pcap or pcapng"]),
        (
            ["inspect", str(REFERENCE / "fc.pcapng"), "--layer", "NoSuchLayer"],
            ["unknown layer 'NoSuchLayer'"],
        ),
        (["craft", "IP(ttl=300)", "-o", "/tmp/ftsslab-never.pcapng"], ["bad expression", "ttl"]),
        (["craft", "__import__('os')", "-o", "/tmp/ftsslab-never.pcapng"], ["bad expression"]),
        (["craft", "IP()", "-o", "/nonexistent-dir/x.pcapng"], ["cannot write"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needles):
    assert_one_line_error(ftsslab(*args), *needles)


def test_help_reads_well():
    res = ftsslab("--help")
    assert res.returncode == 0
    for cmd in ("layers", "craft", "inspect", "shell"):
        assert cmd in res.stdout


def test_shell_banner_names_the_layers():
    res = subprocess.run(
        [sys.executable, "-c", "from ftsslab.cli import main; main()", "shell"],
        input="print('LAYERS', len([c for c in (FCoE, FTSS, I2OMessage, RETH)]))\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "ftsslab layers:" in res.stdout + res.stderr
    assert "LAYERS 4" in res.stdout
