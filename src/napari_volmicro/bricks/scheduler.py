"""Checking a dask scheduler address before a client connects to it.

dask's client trusts its peer: a peer that accepts the connection and never
answers made ``Client(address, timeout=3)`` hang past its timeout (killed at
90 s), and a peer that answers like an HTTP service made it read
``b"HTTP/1.0"`` as a frame length and allocate 3.01 EiB. A dask scheduler
speaks first on a new TCP connection (an 8-byte little-endian frame length,
then its handshake), so ``probe_scheduler`` connects with a deadline, reads
those 8 bytes and refuses the address with a ``VolmicroError`` that says what
the peer did, before dask is involved. Addresses of other transports (tls://,
ws://, inproc://) are left to dask.
"""

from __future__ import annotations

import math
import socket
import time

from ..errors import VolmicroError

#: the largest first frame a scheduler's handshake plausibly has (it is well under 1 kB)
MAX_HANDSHAKE_BYTES = 1 << 20


def check_timeout(timeout) -> float:
    """``timeout`` as positive finite seconds (``VolmicroError`` otherwise)."""
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        t = math.nan
    if not (math.isfinite(t) and t > 0):
        raise VolmicroError(f"--scheduler-timeout must be a positive number of seconds, got {timeout!r}")
    return t


def _tcp_host_port(address: str) -> tuple[str, int] | None:
    text = address.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme != "tcp":
        return None
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # [IPv6]:port
        host, _, port = rest[1:].partition("]:")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise VolmicroError(f"dask scheduler address {address!r} is not HOST:PORT (e.g. tcp://host:8786)")
    return host, int(port)


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in data)


def probe_scheduler(address: str, timeout: float) -> None:
    """Refuse a tcp scheduler address whose peer does not answer like a dask scheduler within ``timeout`` s."""
    timeout = check_timeout(timeout)
    where = _tcp_host_port(address)
    if where is None:
        return
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(where, timeout=timeout)
    except TimeoutError:
        raise VolmicroError(f"dask scheduler {address} did not accept a connection within {timeout:g} s; "
                            "check the address and that the scheduler is running") from None
    except OSError as exc:
        raise VolmicroError(f"dask scheduler {address} did not answer within {timeout:g} s (cannot connect: "
                            f"{exc.strerror or exc}); check the address (e.g. tcp://host:8786) and that the "
                            "scheduler is running") from None
    head = b""
    try:
        with sock:
            while len(head) < 8:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    raise VolmicroError(f"dask scheduler {address} closed the connection without a handshake; "
                                        "is it a dask scheduler (default port 8786)?")
                head += chunk
    except TimeoutError:
        raise VolmicroError(f"dask scheduler {address} accepted the connection but sent nothing within "
                            f"{timeout:g} s; is it a dask scheduler (default port 8786)?") from None
    except OSError as exc:
        raise VolmicroError(f"dask scheduler {address}: the connection failed ({exc.strerror or exc})") from None
    length = int.from_bytes(head, "little")
    if not 0 < length <= MAX_HANDSHAKE_BYTES:
        raise VolmicroError(f"{address} does not speak the dask protocol (it began with {_printable(head)!r}: "
                            "an HTTP service, such as the dashboard on port 8787?); give the scheduler's "
                            "address, e.g. tcp://host:8786")
