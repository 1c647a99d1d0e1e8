"""NATS connection options and the FastStream broker, both built from `NatsSettings`."""

from __future__ import annotations

import asyncio
import logging
import ssl
from types import TracebackType
from typing import Any

import nats
import nats.errors
from fast_depends.msgspec import MsgSpecSerializer
from faststream import AckPolicy
from faststream.message import StreamMessage
from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials, NatsSecurity, NatsToken, NatsUserPassword
from nats.aio.client import Client

from lumiku_bgremover.settings import NatsSettings

log = logging.getLogger(__name__)

CLIENT_NAME = "lumiku-bgremover"
#: FastStream's service and access lines go through this logger, so they take the
#: service's log format (FastStream's own loggers write coloured text to stdout).
BROKER_LOGGER = "lumiku_bgremover.faststream"
#: nats-py gives up after 60 attempts by default, leaving a live but useless process:
#: reconnect forever instead (a NATS outage of any length ends with the service back).
MAX_RECONNECT_ATTEMPTS = -1
#: Seconds between reconnect attempts to the same server.
RECONNECT_TIME_WAIT_S = 2
#: Seconds the first connection of a plain client may take (then the caller fails).
FIRST_CONNECT_S = 60.0
#: Level of FastStream's per-message "Received"/"Processed" lines: DEBUG, so a busy
#: request-reply subject (quotes) writes no line per message at INFO. Handler errors are
#: still logged at ERROR; our handlers log what they decide themselves.
ACCESS_LOG_LEVEL = logging.DEBUG
#: Seconds a stopping broker waits for in-flight handlers before giving up on them.
GRACEFUL_TIMEOUT_S = 30.0


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """A client TLS context when a CA or a client certificate is configured."""
    if settings.tls_ca is None and settings.tls_cert is None:
        return None
    context = ssl.create_default_context(cafile=str(settings.tls_ca) if settings.tls_ca else None)
    if settings.tls_cert is not None:
        key = str(settings.tls_key) if settings.tls_key else None
        context.load_cert_chain(str(settings.tls_cert), key)
    return context


async def _disconnected() -> None:
    log.warning("NATS connection lost; reconnecting")


async def _reconnected() -> None:
    log.warning("NATS connection re-established")


#: nats-py's text for an `-ERR` that refuses one publish or subscription (the connection
#: stays up, and a request to the refused subject just times out).
PERMISSIONS_VIOLATION = "permissions violation"
#: Where the permissions the service's NATS user needs are listed.
PERMISSIONS_PAGE = "docs/nats-permissions.md"


def permission_denied(error: Exception) -> bool:
    """Whether NATS refused a publish or subscription of this connection's user."""
    return PERMISSIONS_VIOLATION in str(error).lower()


async def _error(error: Exception) -> None:
    if permission_denied(error):  # a configuration error: it never goes away by itself
        log.error("%s: the service's NATS user lacks this permission (see %s)",
                  error, PERMISSIONS_PAGE)  # fmt: skip
        return
    log.warning("NATS: %r", error)  # one line per failed attempt, not a traceback


def reconnect_options() -> dict[str, Any]:
    """Reconnect forever."""
    return {
        "max_reconnect_attempts": MAX_RECONNECT_ATTEMPTS,
        "reconnect_time_wait": RECONNECT_TIME_WAIT_S,
    }


def logging_callbacks() -> dict[str, Any]:
    """Say in the log when a long-lived connection is lost, retried and back."""
    return {"disconnected_cb": _disconnected, "reconnected_cb": _reconnected, "error_cb": _error}


def connect_options(settings: NatsSettings, *, name: str = CLIENT_NAME) -> dict[str, Any]:
    """Keyword arguments for `nats.connect` (authentication and TLS included)."""
    options: dict[str, Any] = {"servers": list(settings.servers), "name": name}
    options |= reconnect_options()
    if settings.user is not None:
        options |= {"user": settings.user, "password": settings.password}
    if settings.token is not None:
        options["token"] = settings.token
    if settings.creds_file is not None:
        options["user_credentials"] = str(settings.creds_file)
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    return options


async def connect(
    settings: NatsSettings,
    *,
    name: str = CLIENT_NAME,
    within_s: float = FIRST_CONNECT_S,
    log_events: bool = False,
) -> Client:
    """A plain nats-py connection (provisioning and command-line clients use it).

    Once connected it reconnects forever; the first connection must succeed within
    `within_s` (nats-py would otherwise retry it forever), so a service started
    without NATS exits non-zero and its supervisor restarts it. Errors are logged in one
    line (a refused permission at ERROR, naming the subject); `log_events` also logs
    losing and regaining the connection (the service's long-lived connections).
    """
    options = connect_options(settings, name=name) | {"error_cb": _error}
    if log_events:
        options |= logging_callbacks()
    return await asyncio.wait_for(nats.connect(**options), within_s)


async def close(nc: Client) -> None:
    """Close `nc`; while NATS is away the unsent buffer is dropped (JetStream redelivers)."""
    try:
        await nc.close()
    except (OSError, nats.errors.Error) as error:
        log.warning("NATS connection closed uncleanly: %r", error)


def broker_security(settings: NatsSettings) -> NatsSecurity | None:
    """FastStream's security object for the configured authentication."""
    context = tls_context(settings)
    tls: dict[str, Any] = {"ssl_context": context, "use_ssl": context is not None}
    if settings.creds_file is not None:
        return NatsCredentials.from_file(settings.creds_file, **tls)
    if settings.user is not None and settings.password is not None:
        return NatsUserPassword(settings.user, settings.password, **tls)
    if settings.token is not None:
        return NatsToken(settings.token, **tls)
    return NatsSecurity(**tls) if context is not None else None


class ServiceBroker(NatsBroker):
    """FastStream's broker, stopping cleanly even while NATS is unreachable.

    `NatsBroker.stop` drains the connection, which fails while nats-py is
    reconnecting: the connection is then closed instead, so SIGTERM during a NATS
    outage still ends in a clean exit.
    """

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        try:
            await super().stop(exc_type, exc_val, exc_tb)
        except (OSError, nats.errors.Error) as error:
            log.warning("NATS connection not drained at stop (%r); closed instead", error)
            connection, self._connection = self._connection, None
            if connection is not None:
                await close(connection)
            self.config.disconnect()


async def raw_body(msg: StreamMessage[Any]) -> bytes:
    """A message's body as sent: every handler decodes (and answers errors) itself.

    FastStream's default decoder parses JSON with the standard library before any
    handler runs: a body nested deeper than its recursion limit raised there, outside
    our handlers, and NACK_ON_ERROR redelivered it at once, forever.
    """
    return msg.body


def build_broker(settings: NatsSettings) -> NatsBroker:
    """The service's broker: raw bodies (handlers decode with msgspec), NACK on error
    (never a silent TERM)."""
    return ServiceBroker(
        list(settings.servers),
        name=CLIENT_NAME,
        security=broker_security(settings),
        serializer=MsgSpecSerializer(),
        decoder=raw_body,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        graceful_timeout=GRACEFUL_TIMEOUT_S,
        logger=logging.getLogger(BROKER_LOGGER),
        log_level=ACCESS_LOG_LEVEL,
        **reconnect_options(),
        **logging_callbacks(),
    )
