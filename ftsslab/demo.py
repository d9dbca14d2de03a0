"""A tour of the packet side: craft one packet per family, show it, ask tshark.

``python -m ftsslab.demo``. Exit status 1 when tshark fails or disagrees with
ftsslab about a frame (malformed, bad FC CRC).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .expr import parse_packet
from .pcapng import Interface, PcapNgWriter

_IP = 'IP(src="192.0.2.80", dst="192.0.2.82")'
_L2 = 'Ether(src="02:00:00:00:00:50", dst="02:00:00:00:00:52")'
_FABRIC = 'Ether(src="0e:fc:00:01:01:00", dst="0e:fc:00:01:00:00")/FCoE()'

DEMO = [
    (
        "FTSS: a server's packet, committed by the FTSS (block 152)",
        f'{_FABRIC}/FC(d_id="01.00.00", s_id="01.01.00")/FTSS()/FTSSPacket(msg_id=1)/{_L2}/{_IP}'
        '/UDP(sport=40000, dport=7)/b"hello through the FTSS"',
    ),
    (
        "FTSS: ack, stored and delivery guaranteed (block 174)",
        f'{_FABRIC}/FC(d_id="01.01.00", s_id="01.00.00")/FTSS()'
        '/FTSSAck(msg_id=1, status="STORED_GUARANTEED")',
    ),
    (
        "XAP: the switch is told to redirect a client's connection (seed 002)",
        f'{_L2}/{_IP}/UDP(sport=5016, dport=5016)/XAPUDP(messages=[XAP(operation="redirect",'
        ' nonce=0x1234, proto=6, sport=40000, dport=2049, xid=1, cluster_id="192.0.2.1")])',
    ),
    (
        "TCH: SYN with HND and the endpoint option (Fig. 4B)",
        f'{_L2}/{_IP}/TCP(sport=50001, dport=2049, flags="S", reserved=tch("HND"),'
        ' options=tch_options(endpoint=(40000, "198.51.100.7")))',
    ),
    (
        "RDMA WRITE guarded by an RKey (seed 003)",
        f'{_L2}/{_IP}/UDP(sport=49152, dport=4791, chksum=0)/BTH(opcode="RC_RDMA_WRITE_ONLY",'
        ' dqpn=17, psn=1)/RETH(va=0x10000, rkey=0xABCD01, dmalen=16)/b"sixteen bytes!!!"',
    ),
    (
        "NAK: remote access error (bad RKey)",
        f'{_L2}/{_IP}/UDP(sport=49152, dport=4791, chksum=0)/BTH(opcode="RC_ACKNOWLEDGE",'
        ' dqpn=18, psn=1)/nak_aeth("REMOTE_ACCESS_ERROR", msn=1)',
    ),
    (
        "I2O BLOCK_READ exported onto the SAN (seed 001)",
        f'{_L2}/{_IP}/UDP(sport=49122, dport=49122)/I2OMessage(function="BsaBlockRead",'
        " initiator_context=7, transaction_context=1)"
        "/I2OBlockRead(byte_count=4096, byte_address=0)",
    ),
]


def main(out_dir: Path = Path("demo-out")) -> int:
    console = Console()
    out_dir.mkdir(exist_ok=True)
    capture = out_dir / "demo.pcapng"
    iface = Interface("demo", "ftsslab demo: one crafted packet per protocol family")
    table = Table(title="ftsslab demo: crafted from safe expressions")
    for col in ("#", "what", "ftsslab sees", "bytes"):
        table.add_column(col)
    with capture.open("wb") as fh:
        writer = PcapNgWriter(fh)
        for i, (what, expr) in enumerate(DEMO, start=1):
            pkt = parse_packet(expr)
            writer.packet(iface, bytes(pkt), 1_700_000_000_000_000_000 + i * 1000, [what])
            table.add_row(str(i), what, pkt.summary(), str(len(pkt)))
    console.print(table)
    console.print(
        f"capture: [bold]{capture}[/bold]  (open it in Wireshark; "
        f"`ftsslab inspect {capture}` shows every field)"
    )
    return _tshark_view(console, capture)


def _tshark_view(console: Console, capture: Path) -> int:
    tshark = shutil.which("tshark")
    if tshark is None:
        console.print("tshark not found: skipping the Wireshark view")
        return 0
    res = subprocess.run(
        [
            tshark,
            "-r",
            str(capture),
            "-T",
            "fields",
            "-E",
            "separator=\t",
            "-e",
            "frame.number",
            "-e",
            "frame.protocols",
            "-e",
            "fcoe.crc.status",
            "-e",
            "_ws.malformed",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    table = Table(title="what tshark (Wireshark's engine) sees in the same file")
    for col in ("#", "protocols", "FC CRC"):
        table.add_column(col)
    bad = 0
    for line in res.stdout.splitlines():
        number, protocols, crc, malformed = (line.split("\t") + ["", "", "", ""])[:4]
        crc_text = {"1": "good", "2": "BAD"}.get(crc, "-")
        bad += crc_text == "BAD" or bool(malformed)
        table.add_row(number, protocols, crc_text)
    console.print(table)
    if res.returncode != 0 or table.row_count != len(DEMO):
        console.print(f"[red]tshark failed or read {table.row_count} of {len(DEMO)} frames[/red]")
        return 1
    if bad:
        console.print(f"[red]{bad} frame(s) malformed or with a bad FC CRC[/red]")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
