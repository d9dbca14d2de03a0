"""Suite-wide guard: after the whole run, no lab namespace, link or process is left."""

import os
import subprocess

import pytest


def _lab_leftovers() -> list[str]:
    if os.geteuid() != 0:
        return []
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    spaces = [line.split()[0] for line in res.stdout.splitlines()
              if line.startswith("fl") and "-" in line.split()[0]]
    procs = subprocess.run(["pgrep", "-f", "ftsslab.lab.veth.switchd"], capture_output=True,
                           text=True, check=False).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=False).stdout
    root_links = [line.split(":")[1].strip() for line in links.splitlines()
                  if line.split(":")[1].strip().startswith("fl")]
    return spaces + [f"switchd pid {p}" for p in procs] + root_links


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    before = set(_lab_leftovers())
    yield
    left = set(_lab_leftovers()) - before
    assert not left, f"the test suite left lab resources behind: {sorted(left)}"


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
