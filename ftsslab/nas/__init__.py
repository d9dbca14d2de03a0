# SPDX-License-Identifier: GPL-2.0-or-later
"""Seed 002, transparent switched NAS access: the switch as a virtual IP host and NAS devices
that hand live TCP connections to each other (TCH), programmed by XAP. See docs/nas.md.

Sans-IO cores: ``tch`` (TCH sessions), ``xap`` (the switch's and a device's XAP), ``http``
(the devices' HTTP/1.1), ``segment`` (TCP segments of the TCH session). Kernel glue:
``repair`` (TCP_REPAIR), ``bpf`` (packet filters), ``giver`` (the first device's side of a
handoff), ``staging`` (partial uploads). Processes: ``switchd``, ``device``; kinds: ``kinds``.
"""
