"""The FTSS scenarios on real namespaces: unmodified programs, a real store, real SIGKILL."""

from pathlib import Path

import pytest

from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import load_scenario
from tests.support import ftsslab

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.root


@pytest.mark.parametrize("name", ["ftss-http-kill", "ftss-guaranteed", "ftss-undeliverable"])
def test_scenario_passes_on_veth(name):
    from ftsslab.lab.veth.backend import VethBackend

    result = Runner(load_scenario(ROOT / "scenarios" / f"{name}.yaml"), VethBackend()).run()
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]


def test_replay_command_rolls_back_a_nodes_dialog(tmp_path):
    """`ftsslab ftss replay` asks the running FTSS to re-send what it retained for a node."""
    import json

    up = ftsslab("lab", "up", str(ROOT / "scenarios" / "ftss-retention.yaml"))
    assert up.returncode == 0, up.stderr
    lab = up.stdout.split()[1]
    try:
        pcap = tmp_path / "dialog.pcapng"
        assert ftsslab("craft", 'Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")'
                       '/IP(src="10.0.0.1", dst="10.0.0.2")/UDP(sport=5000, dport=9)/b"dialog"',
                       "-o", str(pcap), "--count", "3").returncode == 0
        sent = ftsslab("replay", str(pcap), "--into", "app1:eth0", "--pps", "50", "--lab", lab)
        assert sent.returncode == 0, sent.stderr
        got = ftsslab("ftss", "replay", "--node", "srv2", "--since", "60", "--lab", lab, "--json")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout) == {"ok": True, "replayed": 3}
        wrong = ftsslab("ftss", "replay", "--node", "app1", "--since", "60", "--lab", lab)
        assert wrong.returncode == 2 and "not a server" in wrong.stderr
    finally:
        assert ftsslab("lab", "down", "--lab", lab).returncode == 0
