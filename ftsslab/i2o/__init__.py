# SPDX-License-Identifier: GPL-2.0-or-later
"""Seed 001: the I2O IOP access module (host driver module 310) and the IOPs it exports.

Sans-IO cores: the IOP emulation (``iop``, ``ddm``, ``blockdev``, ``bus``) and the host driver
module's Local Transport, Remote Transport and Connection Manager (``local_transport``,
``remote_transport``, ``connection_manager``, wired by ``host``), with the context swap's
callback table (``context``). Frames are parsed and built by ``ftsslab.fast.i2o``. See
docs/i2o.md.
"""
