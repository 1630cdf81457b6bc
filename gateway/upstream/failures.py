"""How an exchange with an upstream fails, below the gateway's error tree (`upstream/client.py`
translates each into it)."""

from __future__ import annotations


class ConnectFailed(OSError):
    """The TCP/TLS connection could not be made: nothing reached the upstream."""


class ProtocolFailure(Exception):
    """The upstream broke the HTTP exchange (bad response, connection lost mid-message)."""


class PoolBusy(Exception):
    """Every connection to the upstream stayed busy for the acquire timeout: nothing was sent."""
