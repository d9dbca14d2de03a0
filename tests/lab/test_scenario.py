"""Scenario loader: good files load, broken ones report all errors, fuzzing never crashes."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.lab import kinds
from ftsslab.lab.kinds import (
    KindSpec,
    Option,
    OptionIssue,
    option_schema,
    register_kind,
    unregister_kind,
)
from ftsslab.lab.model import (
    Check,
    CommandResult,
    Exec,
    ForwardingEntry,
    LinkState,
    NodeProcess,
    Received,
    Send,
    TableHas,
    TableOp,
    Wait,
)
from ftsslab.lab.scenario import (
    MAX_BYTES,
    ScenarioError,
    ScenarioErrors,
    load_scenario,
    load_scenario_text,
)
from tests.support import ftsslab

HERE = Path(__file__).parent
GOOD = sorted((HERE / "good").glob("*.yaml"))
BROKEN = sorted((HERE / "broken").glob("*.yaml"))
LINE_RE = re.compile(r"^\S+?(:\d+)?: .+$")


def errors_of(text: str, path: str = "t.yaml") -> list[str]:
    with pytest.raises(ScenarioErrors) as info:
        load_scenario_text(text, path)
    return str(info.value).splitlines()


def test_corpus_sizes():
    assert len(BROKEN) >= 30
    assert len(GOOD) >= 3


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_files_load(path: Path):
    scenario = load_scenario(path)
    assert scenario.path == str(path)
    assert scenario.name == path.stem
    macs = [ep.mac for link in scenario.links for ep in (link.a, link.b)]
    assert len(macs) == len(set(macs))


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_broken_file_reports_every_expected_error(path: Path):
    text = path.read_text()
    wanted = [line[len("# expect:"):].strip() for line in text.splitlines()
              if line.startswith("# expect:")]
    assert wanted, f"{path.name} has no `# expect:` line"
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(path)
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.errors)
    for line in lines:
        assert line.startswith(str(path)), line
        assert LINE_RE.match(line), line
    for want in wanted:
        assert any(want in line for line in lines), f"{want!r} not in:\n" + "\n".join(lines)


def test_switch_demo_model():
    s = load_scenario(HERE / "good" / "switch-demo.yaml")
    assert s.backend == "auto" and s.description == "hosts through a learning switch"
    assert [n.kind for n in s.nodes] == ["host", "host", "switch"]
    assert s.needs_kernel()
    l0, l1 = s.links
    assert l0.name == "h1:eth0 s1:p1"
    assert l1.a.mac == "02:00:00:00:02:01" and l1.a.ipv4 == "10.0.0.2/24" and l1.mtu == 1500
    # derived MACs: 02:00:<node index>:<iface index>:00 in order of appearance
    assert l0.a.mac == "02:00:00:01:01:00" and l0.b.mac == "02:00:00:03:01:00"
    assert l1.b.mac == "02:00:00:03:02:00"
    kinds_of = [type(st).__name__ for st in s.steps]
    assert kinds_of == ["Send", "Exec", "Exec", "LinkState", "LinkState", "TableOp",
                        "NodeProcess", "NodeProcess", "Wait", "Check", "TableOp", "Wait"]
    send = s.steps[0]
    assert isinstance(send, Send)
    assert (send.label, send.endpoint, send.count, send.interval) == ("first-burst", "h1:eth0", 3,
                                                                      0.01)
    assert send.where == "steps[0].send" and send.line == 16
    ping = s.steps[1]
    assert isinstance(ping, Exec) and ping.argv == ("ping", "-c", "1", "10.0.0.2")
    assert ping.timeout == 10 and ping.label == "ping-h2"
    bg = s.steps[2]
    assert isinstance(bg, Exec) and bg.argv == ("tcpdump", "-ni", "eth0") and bg.background
    assert bg.label == "steps[2]"
    down = s.steps[3]
    assert isinstance(down, LinkState) and down.link == "h1:eth0 s1:p1" and not down.up
    add = s.steps[5]
    entry = ForwardingEntry(vip="10.0.0.100", out_port="p2", client_ip="10.0.0.1", proto=6,
                            client_port=40000, vport=80, dst_mac="02:00:00:00:02:01")
    assert isinstance(add, TableOp) and add.op == "add" and add.entry == entry
    remove = s.steps[10]
    assert isinstance(remove, TableOp) and remove.op == "remove" and remove.entry == entry
    assert isinstance(s.steps[6], NodeProcess) and s.steps[6].action == "kill"
    wait = s.steps[8]
    assert isinstance(wait, Wait) and wait.seconds == pytest.approx(0.2)
    check = s.steps[9]
    assert isinstance(check, Check) and check.label == "after-change"
    assert isinstance(check.expectations[0], TableHas)
    assert check.expectations[0].where == "steps[9].check.expect[0].table"
    r0, r1, absent, cmd, lacks = s.expectations
    assert isinstance(r0, Received) and (r0.count, r0.min, r0.max) == (3, None, None)
    assert isinstance(r1, Received) and (r1.iface, r1.min, r1.max) == ("eth0", 1, 10)
    assert absent.link == "h1:eth0 s1:p1"
    assert isinstance(cmd, CommandResult) and cmd.contains == "1 received" and cmd.status == 0
    assert isinstance(lacks, TableHas) and not lacks.present
    assert lacks.entry == ForwardingEntry(vip="10.0.0.100", out_port="p2")


def test_sim_file_and_received_defaults():
    s = load_scenario(HERE / "good" / "sim-redirect.yaml")
    assert s.backend == "sim" and not s.needs_kernel()
    assert s.links[2].mtu == 9000 and s.links[2].name == "h3:eth0 s1:p3"
    send = s.steps[1]
    assert isinstance(send, Send) and "\n" not in send.packet  # block scalar joined
    assert s.expectations[1].count == 0
    s2 = load_scenario(HERE / "good" / "two-switches.yaml")
    assert (s2.expectations[0].min, s2.expectations[0].max) == (1, None)


BASE = """\
name: t
nodes:
  h1: {kind: host}
  h2: {kind: host}
  s1: {kind: switch}
links:
"""


def test_derived_macs_never_clash_with_given_ones():
    text = BASE + (
        "  - h1:eth0 s1:p1\n"
        "  - endpoints: [{node: h2, interface: eth0, mac: '02:00:00:01:02:00'}, s1:p2]\n"
        "  - endpoints: [h1:eth1, {node: s1, interface: p3, mac: '02:00:00:03:03:00'}]\n")
    s = load_scenario_text(text)
    h1_eth1 = s.links[2].a
    assert h1_eth1.mac == "02:00:00:01:02:01"  # 02:00:00:01:02:00 is given to h2:eth0
    assert s.links[1].b.mac == "02:00:00:03:02:00"
    assert load_scenario_text(text) == s  # deterministic


def test_link_reference_either_order_and_canonical_name():
    text = BASE + "  - h1:eth0 s1:p1\nsteps:\n  - link: {link: 's1:p1   h1:eth0', state: down}\n"
    step = load_scenario_text(text).steps[0]
    assert isinstance(step, LinkState) and step.link == "h1:eth0 s1:p1"


def test_uppercase_mac_and_unquoted_sexagesimal_mac_are_text():
    text = BASE + "  - endpoints: [{node: h1, interface: eth0, mac: 12:34:56:00:00:02}, s1:p1]\n" \
        "  - endpoints: [{node: h2, interface: eth0, mac: 'AA:BB:CC:00:00:02'}, s1:p2]\n"
    s = load_scenario_text(text)
    assert s.links[0].a.mac == "12:34:56:00:00:02"
    assert s.links[1].a.mac == "aa:bb:cc:00:00:02"


def test_all_errors_in_one_run_sorted_by_line():
    text = ("name: Bad\nnodes:\n  h1: {kind: hots}\nlinks: [h1:eth0 h9:eth0]\n"
            "steps:\n  - wait: -1\n  - kill: h2\nexpect:\n  - received: {node: h1, match: 'X()'}\n")
    lines = errors_of(text)
    assert [int(line.split(":")[1]) for line in lines] == [1, 3, 4, 6, 7, 9]
    assert "did you mean 'host'?" in lines[1]


def test_error_format():
    err = ScenarioError("steps[3].send.packet", 12, "unknown layer 'UPD'",
                        "see `ftsslab layers`", "scenarios/x.yaml")
    assert str(err) == ("scenarios/x.yaml:12: steps[3].send.packet: unknown layer 'UPD' "
                        "(hint: see `ftsslab layers`)")
    assert str(ScenarioError("", None, "the file is empty", "", "x.yaml")) == \
        "x.yaml: the file is empty"
    assert str(ScenarioError("a", 1, "two\nlines", "h\nh", "f")) == "f:1: a: two lines (hint: h h)"


def test_yaml_tags_never_run_code(tmp_path: Path):
    marker = tmp_path / "made"
    text = f"name: x\nnodes: {{h1: {{kind: host}}}}\ndescription: " \
        f"!!python/object/apply:os.mkdir ['{marker}']\n"
    assert "YAML tag" in errors_of(text)[0]
    assert not marker.exists()


def test_file_limits(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\n#" + "x" * MAX_BYTES + "\n")
    with pytest.raises(ScenarioErrors, match="1 MiB"):
        load_scenario(big)
    with pytest.raises(ScenarioErrors, match="1 MiB"):
        load_scenario_text("#" + "x" * MAX_BYTES)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: x\n\xff\xfe\n")
    with pytest.raises(ScenarioErrors, match=r"bin.yaml:2: the file is not UTF-8"):
        load_scenario(binary)
    with pytest.raises(ScenarioErrors, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    for text in ("", "   \n# only a comment\n", "~\n"):
        assert "the file is empty" in errors_of(text)[0]
    assert "nested too deeply" in errors_of("a: " + "[" * 200 + "]" * 200)[0]


def test_registered_kind_options_and_kernel_requirement():
    validate, defaults = option_schema({
        "disks": Option(int, default=1, check=lambda v: None if v > 0 else "disks must be > 0"),
        "mode": Option(str, choices=("raid0", "raid1")),
    })
    register_kind(KindSpec(name="nas-test", has_process=True, needs_kernel=True,
                           validate_options=validate, summary="a test NAS", defaults=defaults,
                           ip_interfaces=True))
    try:
        assert "nas-test" in kinds.kind_names()
        s = load_scenario_text("name: x\nnodes:\n  n1: {kind: nas-test, mode: raid1}\n"
                               "steps:\n  - restart: n1\n")
        assert s.nodes[0].options == {"disks": 1, "mode": "raid1"}
        lines = errors_of("name: x\nbackend: sim\nnodes:\n  n1:\n    kind: nas-test\n"
                          "    disks: 0\n    mdoe: raid1\n")
        assert any(line.startswith("t.yaml:6: nodes.n1.disks: disks must be > 0")
                   for line in lines), lines
        assert any("t.yaml:7: nodes.n1.mdoe: unknown option 'mdoe' (hint: did you mean 'mode'?)"
                   in line for line in lines), lines
        assert any("node kind 'nas-test' needs a real kernel" in line for line in lines), lines
        with pytest.raises(ValueError):
            register_kind(KindSpec(name="nas-test", has_process=False, needs_kernel=False,
                                   validate_options=validate, summary=""))
    finally:
        unregister_kind("nas-test")


def test_crashing_option_validator_is_reported():
    def boom(options):
        raise RuntimeError("kaboom")

    register_kind(KindSpec(name="boom-test", has_process=False, needs_kernel=False,
                           validate_options=boom, summary=""))
    try:
        assert "kaboom" in errors_of("name: x\nnodes: {b1: {kind: boom-test}}\n")[0]
    finally:
        unregister_kind("boom-test")


def test_builtin_kinds():
    host, switch = kinds.get_kind("host"), kinds.get_kind("switch")
    assert host and switch
    assert not host.has_process and switch.has_process
    assert not host.needs_kernel and not switch.needs_kernel
    assert switch.has_table and switch.forwards and "br0" in switch.reserved_ifaces


# ---- fuzzing ----------------------------------------------------------------------------

GOOD_DATA = yaml.safe_load((HERE / "good" / "switch-demo.yaml").read_text())

values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["h1", "s1", "h1:eth0", "h1:eth0 s1:p1", "p2", "10.0.0.1", "10.0.0.1/24",
                     "02:00:00:00:00:01", "tcp", "Ether()", "UDP()", "up", "1ms", "ping-h2"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                         max_size=2),
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _at(obj, path):
    for p in path:
        obj = obj[p]
    return obj


@st.composite
def mutated(draw):
    data = copy.deepcopy(GOOD_DATA)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _at(data, path[:-1]), path[-1]
        op = draw(st.sampled_from(["drop", "rename", "retype", "dup"]))
        if op == "drop":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(key)
        elif op == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        else:
            parent[key] = draw(values)
    return data


def _assert_only_scenario_errors(text: str) -> None:
    try:
        load_scenario_text(text, "fuzz.yaml")
    except ScenarioErrors as exc:
        assert exc.errors
        for line in str(exc).splitlines():
            assert line.startswith("fuzz.yaml")
            assert "internal error" not in line, line


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_structure_raises_only_scenario_errors(data):
    _assert_only_scenario_errors(yaml.safe_dump(data, allow_unicode=True))


GOOD_TEXT = (HERE / "good" / "switch-demo.yaml").read_text()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(GOOD_TEXT)), st.integers(0, 8),
                          st.text(alphabet=st.characters(codec="utf-8"), max_size=6)),
                min_size=1, max_size=4))
def test_mutated_text_raises_only_scenario_errors(edits):
    text = GOOD_TEXT
    for pos, cut, insert in edits:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut:]
    _assert_only_scenario_errors(text)


SHIPPED = sorted((HERE.parent.parent / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenarios_validate(path: Path):
    load_scenario(path)


def test_errors_api():
    with pytest.raises(ScenarioErrors) as info:
        load_scenario_text("name: x\nnodes: {h1: {kind: host}}\nsteps: [{wait: -1}]\n", "f.yaml")
    exc = info.value
    assert exc.lines() == str(exc).splitlines() and len(exc.lines()) == 1
    assert exc.errors[0].as_dict() == {
        "file": "f.yaml", "line": 3, "path": "steps[0].wait",
        "message": "duration must be >= 0, got -1",
        "hint": 'seconds: a number like 0.5, or text like "200ms" or "2s"'}


# ---- what a backend refuses at lab-up is an error in the file ------------------------------

LAB_UP = [HERE / "broken" / name for name in (
    "41-ftss-option-ranges.yaml", "42-server-links.yaml", "43-ftss-links.yaml",
    "44-option-macs.yaml", "45-ip-keyword-ifnames.yaml")]


def test_validate_rejects_what_failed_at_lab_up():
    """These files passed `validate`, then hung the sim or failed at lab-up (exit 3)."""
    res = ftsslab("validate", *map(str, LAB_UP), COLUMNS="300")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "ok " not in res.stdout
    for path in LAB_UP:
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith(f"{path}:")]
        want = sum(ln.startswith("# expect:") for ln in path.read_text().splitlines())
        assert len(lines) == want, (path.name, lines)
        assert all(LINE_RE.match(ln) and "(hint: " in ln for ln in lines), lines


def test_option_ranges():
    validate, _ = option_schema({
        "n": Option(int, range=(1, 65535), doc="n: 1..65535"),
        "t": Option((int, float), range=(1e-4, 60), doc="t: seconds, 0.0001..60"),
        "xs": Option(list, range=(1, 2), check=lambda v: OptionIssue("[1]", "bad item")
                     if len(v) > 1 and v[1] == "bad" else None),
    })

    def issues(**options):
        return [(i.key, i.message, i.hint) for i in validate(options)]

    assert issues(n=1, t=60, xs=["a"]) == issues(n=65535, t=1e-4, xs=["a", "b"]) == []
    assert issues(n=2**70) == [("n", f"{2**70} is out of range (1..65535)", "n: 1..65535")]
    assert issues(n=0) == [("n", "0: must be > 0 (1..65535)", "n: 1..65535")]
    assert issues(t=float("inf"))[0][1] == "inf is not a finite number (0.0001..60)"
    assert issues(t=float("nan"))[0][1] == "nan is not a finite number (0.0001..60)"
    assert issues(t=1e-300)[0][1] == "1e-300 is out of range (0.0001..60)"
    assert issues(xs=[])[0][:2] == ("xs", "0 items; 1..2 allowed")
    assert issues(xs=["a", "bad"]) == [("xs[1]", "bad item", "")]


def test_topology_hook_sees_ports_defaults_and_peers():
    seen = {}

    def links(node, nodes):
        seen[node.name] = node
        return [OptionIssue("port", f"{node.options['port']!r} is not on a link")] \
            if node.options["port"] not in node.ports else []

    validate, defaults = option_schema({"port": Option(str, default="p1"),
                                        "size": Option(int, range=(1, 9))})
    register_kind(KindSpec(name="topo-test", has_process=False, needs_kernel=False,
                           validate_options=validate, summary="", defaults=defaults,
                           validate_topology=links))
    try:
        s = load_scenario_text("name: x\nnodes:\n  t1: {kind: topo-test}\n  h1: {kind: host}\n"
                               "links: [t1:p1 h1:eth0]\n")
        t1 = seen["t1"]
        assert t1.given == frozenset() and t1.options == {"port": "p1"}
        port = t1.ports["p1"]
        assert (port.peer_node, port.peer_kind, port.peer_iface, port.mtu) == \
            ("h1", "host", "eth0", 1500) and port.mac == s.links[0].a.mac
        lines = errors_of("name: x\nnodes:\n  t1: {kind: topo-test}\n  t2:\n    kind: topo-test\n"
                          "    port: p9\n  t3: {kind: topo-test, port: p9, size: 0}\n"
                          "  h1: {kind: host}\nlinks: [t1:p1 h1:eth0, t4:p1 h1:eth1]\n")
        assert any(ln.startswith("t.yaml:6: nodes.t2.port: 'p9' is not on a link")
                   for ln in lines), lines                 # the line of the given option
        assert any("nodes.t3.size" in ln for ln in lines)  # bad options: no link check
        assert not any("nodes.t3.port" in ln for ln in lines), lines
        assert sum("not on a link" in ln for ln in lines) == 1, lines
        seen.clear()
        lines = errors_of("name: x\nnodes:\n  t1: {kind: topo-test}\n  h1: {kind: host}\n"
                          "links: [t1:p1 h1:up]\n")      # its link failed: no link check
        assert "t1" not in seen and len(lines) == 1 and "keyword 'up'" in lines[0]
    finally:
        unregister_kind("topo-test")


def test_crashing_topology_validator_is_reported():
    def boom(node, nodes):
        raise RuntimeError("kaboom")

    register_kind(KindSpec(name="boom-test", has_process=False, needs_kernel=False,
                           validate_options=kinds.NO_OPTIONS, summary="",
                           validate_topology=boom))
    try:
        line, = errors_of("name: x\nnodes: {b1: {kind: boom-test}}\n")
        assert line.startswith("t.yaml:2: nodes.b1: kind 'boom-test' cannot check its links: "
                               "kaboom")
    finally:
        unregister_kind("boom-test")


def test_server_node_ids_are_unique_and_defaults_named():
    text = (HERE.parent.parent / "scenarios" / "ftss-link-failure.yaml").read_text()
    load_scenario_text(text)
    lines = errors_of(text.replace("node_id: 2", "node_id: 1"))
    assert lines == ["t.yaml:11: nodes.srv2.node_id: node id 1 is also srv1's (hint: node ids "
                     "are unique: the FTSS tells nodes (and its own external frames) apart by "
                     "them)"]
    lines = errors_of(text.replace('"srv2:fb ftss:b2"', '"srv2:f2 ftss:b2"'))
    assert "t.yaml:11: nodes.srv2.fabric[1]: fabric interface 'fb' is not an interface of " \
        "srv2 on a link (hint: srv2's interfaces on links: fa, f2, stack; fabric defaults " \
        "to [fa, fb])" in lines


@pytest.mark.root
def test_ip_keyword_names_are_what_iproute2_misreads():
    """The loader refuses a name exactly when `ip link` cannot take it where the veth
    backend puts it (`ip link set NAME up`, `link add NAME ... type veth`)."""
    ns = f"ftsslab-kwtest-{os.getpid()}"   # not fl<id>-…: no lab's namespace
    names = sorted({"a", "b", "ad", "br", "d", "h", "l", "m", "n", "t", "up", "down", "mode",
                    "state", "type", "link", "alias", "help", "dev", "name", "master", "txq",
                    "all", "default", "e", "p", "u", "eth0", "fa", "fb", "stack", "a1", "up1",
                    "ext", "mod", "stat", "x_y-z"})

    def ip(*args):
        return subprocess.run(["ip", "-n", ns, *args], capture_output=True, timeout=10)

    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        for name in names:
            refused = not _loads_iface(name)
            created = ip("link", "add", name, "address", "02:00:00:00:00:01", "type", "veth",
                         "peer", "name", "kwpeer").returncode == 0 and \
                ip("link", "set", name, "up").returncode == 0
            ip("link", "del", "dev", "kwpeer")
            assert created != refused, name
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=10)


def _loads_iface(name: str) -> bool:
    try:
        load_scenario_text(f"name: x\nnodes: {{h1: {{kind: host}}, h2: {{kind: host}}}}\n"
                           f"links: ['h1:{name} h2:eth0']\n")
        return True
    except ScenarioErrors:
        return False
