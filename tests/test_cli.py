"""The `ftsslab` command as users run it: real processes, exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import CLI, ftsslab

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "pcaps" / "reference"


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
    assert {r["family"] for r in rows} == {"fc", "ftss", "xap", "tch", "roce", "i2o", "cluster"}
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
        [*CLI, "shell"],
        input="print('LAYERS', len([c for c in (FCoE, FTSS, I2OMessage, RETH)]))\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "ftsslab layers:" in res.stdout + res.stderr
    assert "LAYERS 4" in res.stdout


def test_inspect_shows_the_good_packets_then_names_the_damage(tmp_path):
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes((REFERENCE / "fc.pcapng").read_bytes()[:3000])
    res = ftsslab("inspect", str(cut))
    assert_one_line_error(res, f"{cut}: damaged at byte 2896, block 21 (Enhanced Packet Block)",
                          "cut short in the middle of a packet", "18 good packets before it")
    assert "#18 " in res.stdout and "#19 " not in res.stdout
    assert "WARNING" not in res.stdout + res.stderr


@pytest.mark.parametrize("count", ["0", "1000001", "1000000000"])
def test_craft_count_is_bounded(tmp_path, count):
    res = ftsslab("craft", "IP()", "-o", str(tmp_path / "x.pcapng"), "--count", count)
    assert_one_line_error(res, "--count must be from 1 to 1,000,000")


def test_craft_refuses_a_huge_stack_in_one_line(tmp_path):
    res = ftsslab("craft", "/".join(["IP()"] * 2500), "-o", str(tmp_path / "x.pcapng"))
    assert_one_line_error(res, "bad expression: 2500 layers joined by '/'; at most 100")


# A resolver asked for a name (not a numeric address: Scapy's import converts a few) ends
# the process with status 99: one DNS lookup fails the test.
NO_DNS = (
    "import os, socket\n"
    "def guard(real):\n"
    "    def lookup(host, *args, **kwargs):\n"
    "        for family in (socket.AF_INET, socket.AF_INET6):\n"
    "            try:\n"
    "                socket.inet_pton(family, str(host).partition('%')[0])\n"
    "                return real(host, *args, **kwargs)\n"
    "            except OSError:\n"
    "                pass\n"
    "        os.write(2, b'name lookup: %r\\n' % (host,))\n"
    "        os._exit(99)\n"
    "    return lookup\n"
    "for name in ('getaddrinfo', 'gethostbyname', 'gethostbyname_ex', 'gethostbyaddr'):\n"
    "    setattr(socket, name, guard(getattr(socket, name)))\n"
    "from ftsslab.cli import main\n"
    "main()\n"
)


def ftsslab_without_dns(*args):
    return subprocess.run([sys.executable, "-c", NO_DNS, *args], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"), timeout=120)


def test_craft_never_resolves_a_name(tmp_path):
    out = tmp_path / "x.pcapng"
    for expr in ('Ether()/IP(dst="example.com")', 'Ether()/IPv6(dst="example.com")'):
        assert_one_line_error(ftsslab_without_dns("craft", expr, "-o", str(out)),
                              "addresses must be literal")
    res = ftsslab_without_dns("craft", 'Ether()/IPv6(src="fe80::1", dst="fe80::2")/UDP()'
                              '/b"literal"', "-o", str(out))
    assert res.returncode == 0, res.stderr


def test_validate_never_resolves_a_name(tmp_path):
    text = (ROOT / "scenarios" / "switch-learning.yaml").read_text()
    assert 'dst="10.0.0.2")/UDP' in text
    scenario = tmp_path / "names.yaml"
    scenario.write_text(text.replace('dst="10.0.0.2")/UDP', 'dst="example.com")/UDP'))
    res = ftsslab_without_dns("validate", str(scenario))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "name lookup" not in res.stderr
    assert "steps[1].send.packet: IP.dst: addresses must be literal" in res.stdout + res.stderr


def test_craft_shows_progress_when_writing_many_copies(tmp_path, monkeypatch):
    """A bar on a terminal (stderr) for many copies (10,000 or more); nothing for a few."""
    import io

    from rich.console import Console

    from ftsslab.cli import packets
    from ftsslab.pcapng import read_packets

    for count, bar in ((30_000, True), (10, False)):
        screen = io.StringIO()
        monkeypatch.setattr(packets, "err", Console(file=screen, force_terminal=True, width=100),
                            raising=False)
        out = tmp_path / f"{count}.pcapng"
        packets.craft('Ether()/IP(src="10.9.0.1", dst="10.9.0.2")', out, count=count)
        assert (f"writing {out}" in screen.getvalue()) is bar
        assert sum(1 for _ in read_packets(out)) == count
