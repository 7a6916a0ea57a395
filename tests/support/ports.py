"""Free loopback ports, and waiting until something listens on one."""

from __future__ import annotations

import random
import socket
import time

__all__ = ["free_port", "wait_for_port"]

HOST = "127.0.0.1"


# Below Linux's ephemeral range (32768-60999): a port picked here is not handed out meanwhile to
# an outgoing connection or to a bind to port 0, which made a server started on it a moment later
# fail with "address already in use" now and then on a busy machine.
_PICKED = range(20000, 32768)
_random = random.Random()


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    for _ in range(50):
        port = _random.choice(_PICKED)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # that range is crowded
        sock.bind((HOST, 0))
        picked: int = sock.getsockname()[1]
        return picked


def port_accepts(port: int, host: str = HOST) -> bool:
    """Does a TCP connect to host:port succeed right now?"""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 10.0, host: str = HOST) -> None:
    """Return once host:port accepts a connection; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not port_accepts(port, host):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} in {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
