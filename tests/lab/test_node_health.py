"""A node process that hits a bug of its own fails the run on veth, with where to look.

The cores raise on a bug (the sim and the tests let it propagate); a veth node process
counts it, keeps serving, and ``VethBackend.problems()`` makes the run fail; a node
process that dies without a ``kill`` step fails it too.
"""

from __future__ import annotations

import pytest

from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import load_scenario_text

from . import faulty_node  # noqa: F401  (registers the kinds `faulty` and `crashing`)

pytestmark = pytest.mark.root

TEXT = """name: health
nodes:
  h1: {kind: host}
  n1: {kind: KIND}
links: ["h1:eth0 n1:eth0"]
steps:
  - send: {from: h1:eth0, packet: 'Ether(dst="ff:ff:ff:ff:ff:ff")/b"boom-boom-boom"'}
  - wait: 0.3
"""


@pytest.mark.parametrize(("kind", "says"), [("faulty", "internal error"),
                                            ("crashing", "exited (status 7)")])
def test_a_node_with_a_bug_fails_the_run(kind, says, tmp_path):
    from ftsslab.lab.veth.backend import VethBackend

    path = tmp_path / "health.yaml"
    path.write_text(TEXT.replace("KIND", kind))
    result = Runner(load_scenario_text(path.read_text(), str(path)), VethBackend()).run()
    assert not result.passed
    (bad,) = [o for o in result.outcomes if not o.passed]
    assert bad.where == "lab" and says in bad.detail and "n1" in bad.detail
    if kind == "faulty":  # the traceback's file goes with the lab: its last line is said
        assert "ZeroDivisionError: a bug in the core" in bad.detail
