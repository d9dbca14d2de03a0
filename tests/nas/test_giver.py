"""The giver's kernel readings of a socket the client may close at any moment."""

from __future__ import annotations

import socket

from ftsslab.nas.giver import _outq, tcp_state


def test_a_socket_closed_during_a_drain_has_nothing_unacked_and_no_state():
    """A handoff drains until SIOCOUTQ is 0; the client leaving meanwhile closes the socket,
    and the reading must say 0, not raise (fcntl refuses descriptor -1 with a ValueError, a
    core bug a veth run counted once)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with client:
            conn.sendall(b"x")
            assert client.recv(1) == b"x" and _outq(conn) >= 0
            conn.close()
            assert _outq(conn) == 0 and tcp_state(conn) == 0
