"""The gateway's ASGI app for granian (bench only: uvicorn vs granian as the server, scenario 7).

`granian --interface asgi --factory bench.granian_app:app` calls `app()`; the gateway's flags
come from the environment variable MCPGW_BENCH_ARGV (as a shell-quoted command line).
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from gateway import logs
from gateway.cli import load_settings
from gateway.http.app import create_app


def app() -> Any:
    settings = load_settings(shlex.split(os.environ["MCPGW_BENCH_ARGV"]))
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)
