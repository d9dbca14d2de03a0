"""Suite-wide rules: environment requirements by marker, no skipping in CI, no lab left behind."""

import pytest

from tests import support


def _in_ci(reason: str) -> str:
    return (f"CI=true, so this skip is a failure: {reason.removeprefix('Skipped: ')}\n"
            "CI must run the whole suite: install what is missing (./run tests does).")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in support.REQUIREMENTS:
        if item.get_closest_marker(marker) and (reason := support.missing(marker)):
            if support.IN_CI:
                pytest.fail(_in_ci(reason), pytrace=False)
            pytest.skip(reason)


def _fail_skip(rep: pytest.TestReport | pytest.CollectReport) -> None:
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    rep.outcome, rep.longrepr = "failed", _in_ci(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under CI any other skip fails too, unless the test is a deliberately opt-in soak (slow)."""
    rep = yield
    if (support.IN_CI and rep.skipped and not hasattr(rep, "wasxfail")
            and not item.get_closest_marker("slow")):
        _fail_skip(rep)
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """Under CI a module that skips itself (allow_module_level, importorskip) fails."""
    rep = yield
    if support.IN_CI and rep.skipped:
        _fail_skip(rep)
    return rep


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """No lab namespace, root link or node process of this run is left after it.

    Labs of other runs on the same machine (their owner is alive) are not ours to count.
    """
    before = support.lab_resources()
    yield
    left = support.leaked(before)
    assert not left, "the test suite left lab resources behind:\n" + "\n".join(map(str, left))


def _no_arp() -> None:
    """Scapy resolves an unset Ether.dst by ARP on the real network: never in tests.

    Frames then get the broadcast address, deterministically and without traffic.
    """
    import logging

    import scapy.layers.all  # noqa: F401  (all resolvers registered first, then dropped)
    from scapy.config import conf

    conf.neighbor.resolvers = {}
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)


_no_arp()
