"""Scapy layers for every wire format of the four seed systems.

Importing this package registers every layer and binding with Scapy, so plain
dissection of bytes (``Ether(raw)``) finds them.  It leaves Scapy as it was for
packets that use none of ftsslab's formats (docs/protocols.md, "What importing
ftsslab.layers changes in Scapy"); :func:`strict` is the opt-in for the rest.
"""

from . import _tcp_options, cluster, fc, ftss, i2o, roce, tch, xap  # noqa: F401  (import = register)
from ._tcp_options import check_tcp_options  # noqa: F401  (craft's 40-byte guard)

MODULES = (fc, ftss, xap, tch, roce, i2o, cluster)


def strict(enabled: bool = True) -> None:
    """Follow the standards where stock Scapy 2.8 does not, for every packet of the process.

    Building a TCP header with more than 40 bytes of options raises ValueError (Scapy
    wraps the 4-bit data offset and emits a corrupt header), and RD ACKNOWLEDGE dissects
    as BTH/RDETH/AETH (IBA 9.2; Scapy reads an AETH right after the BTH).
    ``strict(False)`` gives Scapy's behaviour back.
    """
    _tcp_options.strict(enabled)
    roce.read_rd_ack_per_iba(enabled)
