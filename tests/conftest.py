"""Suite-wide guard: after the whole run, no lab namespace, link or process is left."""

import os

import pytest

LAB_PROCESSES = (b"ftsslab.lab.veth.switchd", b"ftsslab.ftss.daemon")


def lab_leftovers() -> tuple[set, set, set]:
    """(namespaces, root links, node processes) that look like ftsslab's labs."""
    from ftsslab.lab.veth import names

    nss = {n for n in names.list_netns() if n.startswith(names.PREFIX)}
    try:
        links = {d for d in os.listdir("/sys/class/net") if d.startswith(names.PREFIX)}
    except FileNotFoundError:
        links = set()
    procs = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if any(module in f.read() for module in LAB_PROCESSES):
                    procs.add(int(pid))
        except OSError:
            pass
    return nss, links, procs


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    before = lab_leftovers()
    yield
    left = [sorted(map(str, new - old)) for old, new in zip(before, lab_leftovers(), strict=True)]
    assert not any(left), f"the test suite left lab resources behind: {left}"


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
