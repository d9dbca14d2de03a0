"""The command line every system's node process takes (``ftsslab.lab.veth.nodeargs``)."""

from pathlib import Path

import pytest

from ftsslab.lab.veth.nodeargs import node_args

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "san-keys.yaml"


def test_it_loads_the_scenario_and_names_the_node_and_says_ready(tmp_path):
    a = node_args("a node", ["--scenario", str(SCENARIO), "--node", "b", "--state",
                             str(tmp_path)])
    assert (a.node.name, a.node.kind, a.state) == ("b", "sanic", tmp_path)
    assert a.scenario.name == "san-keys"
    a.ready()
    assert (tmp_path / "b.ready").is_file()


def test_a_missing_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        node_args("a node", ["--scenario", str(SCENARIO)])
    assert exc.value.code == 2 and "--node" in capsys.readouterr().err
