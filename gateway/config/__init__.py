"""The gateway's configuration: `Settings` (flags, env, config file) and the parsing of its specs."""

from gateway.config.settings import Settings

__all__ = ["Settings"]
