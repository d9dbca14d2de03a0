# SPDX-License-Identifier: GPL-2.0-or-later
"""Reference I2O frames: every function family, request and reply, over UDP and RoCE.

A remote server (10.0.1.1) sends frames to the host exporting its IOP
(10.0.1.2), seed 001's "inbound message frame"; the host answers with the
"outgoing message frame" whose contexts are the request's (step 650).  Before
that, on the management channel (UDP 49122, D1.5), the remote and the host's
Connection Manager exchange the CM's private frames: hello, advertisement,
connect, and at the end disconnect.
"""

from __future__ import annotations

from scapy.contrib.roce import BTH
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ftsslab.fast.i2o import (
    CM_ADVERTISE,
    CM_CONNECT,
    CM_DISCONNECT,
    CM_HELLO,
    CM_UNKNOWN_CONNECTION,
    I2O_PRIVATE,
    I2O_UDP_PORT,
    MSG_FINAL,
    MSG_REPLY,
)
from ftsslab.fast.roce import ROCEV2_UDP_PORT
from ftsslab.layers.i2o import (
    I2OCMIOP,
    I2OBlockCacheFlush,
    I2OBlockRead,
    I2OBlockReply,
    I2OBlockWrite,
    I2OCMAdvertise,
    I2OCMConnect,
    I2OCMConnectReply,
    I2OCMDevice,
    I2OCMDisconnect,
    I2OCMDisconnectReply,
    I2OCMHello,
    I2OMessage,
    I2OPrivate,
    I2OReply,
    I2OSGEAttributes,
    I2OSGERemote,
    I2OSGESimple,
    I2OSGESimple64,
)

REMOTE_MAC, HOST_MAC = "02:00:00:00:01:01", "02:00:00:00:01:02"
REMOTE_IP, HOST_IP = "10.0.1.1", "10.0.1.2"
RC_SEND_ONLY = 4
REMOTE_QPN, HOST_QPN = 0x000111, 0x000222
IOP_TID, BSA_TID, OSM_TID = 0x000, 0x008, 0x001  # IOP executive, a block device, the OSM
REPLY = MSG_REPLY | MSG_FINAL
RKEY = 0x0A11CE01
REMOTE_VA = 0x00007F00_12340000


def _udp(msg: Packet, reply: bool = False) -> Packet:
    src, dst = (HOST_MAC, REMOTE_MAC) if reply else (REMOTE_MAC, HOST_MAC)
    sip, dip = (HOST_IP, REMOTE_IP) if reply else (REMOTE_IP, HOST_IP)
    return (Ether(src=src, dst=dst) / IP(src=sip, dst=dip)
            / UDP(sport=I2O_UDP_PORT, dport=I2O_UDP_PORT) / msg)


def _roce(msg: Packet, psn: int, reply: bool = False) -> Packet:
    src, dst = (HOST_MAC, REMOTE_MAC) if reply else (REMOTE_MAC, HOST_MAC)
    sip, dip = (HOST_IP, REMOTE_IP) if reply else (REMOTE_IP, HOST_IP)
    qpn = REMOTE_QPN if reply else HOST_QPN
    return (Ether(src=src, dst=dst) / IP(src=sip, dst=dip, flags="DF")
            / UDP(sport=0xC000 | psn, dport=ROCEV2_UDP_PORT)
            / BTH(opcode=RC_SEND_ONLY, dqpn=qpn, psn=psn, ackreq=1) / msg)


def _hdr(function: int, tctx: int, target: int = IOP_TID, reply: bool = False,
         **kw) -> I2OMessage:
    return I2OMessage(function=function, target_tid=target, initiator_tid=OSM_TID,
                      initiator_context=0x52540001, transaction_context=tctx,
                      msg_flags=REPLY if reply else 0, **kw)


def _cm(xfunction: int, tctx: int, reply: bool = False) -> Packet:
    return _hdr(I2O_PRIVATE, tctx, reply=reply) / I2OPrivate(xfunction=xfunction)


def packets() -> list[tuple[str, Packet]]:
    status_addr = Raw(bytes(8) + (0x3F000000).to_bytes(4, "little") + bytes(4)
                      + (88).to_bytes(4, "little"))
    local = [I2OSGESimple(count=4096, address=0x3E000000)]
    local64 = [I2OSGEAttributes(), I2OSGESimple64(count=8192, address=0x1_3E000000)]
    remote = [I2OSGERemote(count=4096, virtual_address=REMOTE_VA, rkey=RKEY)]
    mixed = [I2OSGESimple(count=512, address=0x3E001000, flags="simple+dir+eob"),
             I2OSGERemote(count=3584, virtual_address=REMOTE_VA + 512, rkey=RKEY)]
    devices = [I2OCMDevice(tid=BSA_TID, block_size=512, capacity=64 << 20),
               I2OCMDevice(tid=0x009, block_size=4096, capacity=1 << 40)]
    return [
        ("I2O CM_HELLO (remote server remote-a)",
         _udp(_cm(CM_HELLO, 0x001) / I2OCMHello(remote=b"remote-a"))),
        ("I2O CM_ADVERTISE (host-b: IOP 1 with two block devices, IOP 2 with none)",
         _udp(_cm(CM_ADVERTISE, 0x001) / I2OCMAdvertise(host=b"host-b", iops=[
             I2OCMIOP(iop_id=1, devices=devices), I2OCMIOP(iop_id=2)]), reply=True)),
        ("I2O CM_CONNECT (IOP 1)", _udp(_cm(CM_CONNECT, 0x002) / I2OCMConnect(iop_id=1))),
        ("I2O CM_CONNECT reply OK (connection 1, QPNs 0x222 / 0x223)",
         _udp(_cm(CM_CONNECT, 0x002, reply=True)
              / I2OCMConnectReply(conn_id=1, message_qpn=HOST_QPN, data_qpn=HOST_QPN + 1),
              reply=True)),
        ("I2O CM_DISCONNECT (connection 1)",
         _udp(_cm(CM_DISCONNECT, 0x003) / I2OCMDisconnect(conn_id=1))),
        ("I2O CM_DISCONNECT reply UNKNOWN_CONNECTION",
         _udp(_cm(CM_DISCONNECT, 0x003, reply=True)
              / I2OCMDisconnectReply(status=CM_UNKNOWN_CONNECTION), reply=True)),
        ("I2O ExecStatusGet request (status block to 0x3F000000, 88 bytes)",
         _udp(_hdr(0xA0, 0x100) / status_addr)),
        ("I2O ExecStatusGet reply SUCCESS", _udp(_hdr(0xA0, 0x100, reply=True) / I2OReply(),
                                                 reply=True)),
        ("I2O ExecLctNotify request (class any, change indicator 0)",
         _udp(_hdr(0xA2, 0x101) / Raw(bytes.fromhex("ffffffff00000000")))),
        ("I2O ExecSysTabSet request (IOP 2, segment 0)",
         _udp(_hdr(0xA3, 0x102) / Raw(bytes.fromhex("0200000000000000")))),
        ("I2O ExecIopReset request", _udp(_hdr(0xBD, 0x103) / Raw(bytes(16)))),
        ("I2O UtilNOP request", _udp(_hdr(0x00, 0x200, target=BSA_TID))),
        ("I2O UtilClaim request (primary claim)",
         _udp(_hdr(0x09, 0x201, target=BSA_TID) / Raw(bytes.fromhex("00000001")))),
        ("I2O UtilClaim reply SUCCESS",
         _udp(_hdr(0x09, 0x201, target=BSA_TID, reply=True) / I2OReply(), reply=True)),
        ("I2O UtilParamsGet request (group 0x0000 device info)",
         _udp(_hdr(0x06, 0x202, target=BSA_TID, sgl_offset=5)
              / Raw(bytes.fromhex("00000000" "0c000054" "00f0003e" "580000d0" "00f1003e")))),
        ("I2O UtilEventRegister request (all events)",
         _udp(_hdr(0x13, 0x203, target=BSA_TID) / Raw(bytes.fromhex("ffffffff")))),
        ("I2O UtilAbort reply TRANSACTION_ERROR (UNSUPPORTED_FUNCTION)",
         _udp(_hdr(0x01, 0x204, target=BSA_TID, reply=True)
              / I2OReply(req_status="TRANSACTION_ERROR",
                         detailed_status="UNSUPPORTED_FUNCTION"), reply=True)),
        ("I2O BSA BlockRead request, local SGL (4096 bytes at LBA 0x10000)",
         _udp(_hdr(0x30, 0x300, target=BSA_TID) / I2OBlockRead(byte_address=0x10000,
                                                              sgl=local))),
        ("I2O BSA BlockRead reply SUCCESS (4096 bytes)",
         _udp(_hdr(0x30, 0x300, target=BSA_TID, reply=True) / I2OReply()
              / I2OBlockReply(transfer_count=4096), reply=True)),
        ("I2O BSA BlockRead request, 64-bit SGL (SGL attributes + 64-bit simple)",
         _udp(_hdr(0x30, 0x301, target=BSA_TID)
              / I2OBlockRead(control_flags="cache_read", fetch_ahead=8,
                             byte_address=0x20000, sgl=local64))),
        ("I2O BSA BlockRead reply ABORT_NO_DATA_TRANSFER",
         _udp(_hdr(0x30, 0x301, target=BSA_TID, reply=True)
              / I2OReply(req_status="ABORT_NO_DATA_TRANSFER"), reply=True)),
        ("I2O BSA BlockWrite request, remote SGL (RKey buffer on the SAN)",
         _udp(_hdr(0x31, 0x302, target=BSA_TID)
              / I2OBlockWrite(control_flags="write_thru", byte_address=0x30000, sgl=remote))),
        ("I2O BSA BlockWrite reply ERROR_PARTIAL_TRANSFER (MEDIA_ERROR at 0x30200)",
         _udp(_hdr(0x31, 0x302, target=BSA_TID, reply=True)
              / I2OReply(req_status="ERROR_PARTIAL_TRANSFER", detailed_status="MEDIA_ERROR")
              / I2OBlockReply(transfer_count=512, error_address=0x30200), reply=True)),
        ("I2O BSA BlockWrite request, mixed local + remote SGL",
         _udp(_hdr(0x31, 0x303, target=BSA_TID)
              / I2OBlockWrite(byte_address=0x40000, sgl=mixed))),
        ("I2O BSA CacheFlush request (time multiplier 60)",
         _udp(_hdr(0x37, 0x304, target=BSA_TID) / I2OBlockCacheFlush(time_multiplier=60))),
        ("I2O BSA CacheFlush reply SUCCESS",
         _udp(_hdr(0x37, 0x304, target=BSA_TID, reply=True) / I2OReply()
              / I2OBlockReply(), reply=True)),
        ("I2O over RoCE SEND: ExecStatusGet request", _roce(_hdr(0xA0, 0x400) / status_addr, 1)),
        ("I2O over RoCE SEND: ExecStatusGet reply SUCCESS",
         _roce(_hdr(0xA0, 0x400, reply=True) / I2OReply(), 1, reply=True)),
        ("I2O over RoCE SEND: BSA BlockRead request, remote SGL",
         _roce(_hdr(0x30, 0x401, target=BSA_TID)
               / I2OBlockRead(byte_address=0x50000, sgl=remote), 2)),
        ("I2O over RoCE SEND: BSA BlockRead reply SUCCESS (4096 bytes)",
         _roce(_hdr(0x30, 0x401, target=BSA_TID, reply=True) / I2OReply()
               / I2OBlockReply(transfer_count=4096), 2, reply=True)),
        ("I2O over RoCE SEND: BSA BlockWrite request, local SGL",
         _roce(_hdr(0x31, 0x402, target=BSA_TID)
               / I2OBlockWrite(byte_address=0x60000, sgl=local), 3)),
        ("I2O over RoCE SEND: BSA BlockWrite reply ERROR_NO_DATA_TRANSFER (WRITE_PROTECTED)",
         _roce(_hdr(0x31, 0x402, target=BSA_TID, reply=True)
               / I2OReply(req_status="ERROR_NO_DATA_TRANSFER", detailed_status="WRITE_PROTECTED")
               / I2OBlockReply(transfer_count=0, error_address=0x60000), 3, reply=True)),
    ]
