"""Why a pump stops before its stream's last answer: each ends the stream its own way (`Pump._main`)."""

from __future__ import annotations


class CannotResume(Exception):
    """The upstream stream broke and cannot be re-opened where it stopped."""


class PumpIdle(Exception):
    """No upstream event for longer than the idle bound."""


class PumpAbandoned(Exception):
    """A standalone stream nobody listens to any more: its upstream connection is given back."""
