"""NATS connection options and the FastStream broker, both built from `NatsSettings`."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import nats
from fast_depends.msgspec import MsgSpecSerializer
from faststream import AckPolicy
from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials, NatsSecurity, NatsToken, NatsUserPassword
from nats.aio.client import Client

from lumiku_bgremover.settings import NatsSettings

CLIENT_NAME = "lumiku-bgremover"
#: FastStream's service and access lines go through this logger, so they take the
#: service's log format (FastStream's own loggers write coloured text to stdout).
BROKER_LOGGER = "lumiku_bgremover.faststream"
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


def connect_options(settings: NatsSettings, *, name: str = CLIENT_NAME) -> dict[str, Any]:
    """Keyword arguments for `nats.connect` (authentication and TLS included)."""
    options: dict[str, Any] = {"servers": list(settings.servers), "name": name}
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


async def connect(settings: NatsSettings, *, name: str = CLIENT_NAME) -> Client:
    """A plain nats-py connection (provisioning and command-line clients use it)."""
    return await nats.connect(**connect_options(settings, name=name))


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


def build_broker(settings: NatsSettings) -> NatsBroker:
    """The service's broker: msgspec bodies, NACK on error (never a silent TERM)."""
    return NatsBroker(
        list(settings.servers),
        name=CLIENT_NAME,
        security=broker_security(settings),
        serializer=MsgSpecSerializer(),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        graceful_timeout=GRACEFUL_TIMEOUT_S,
        logger=logging.getLogger(BROKER_LOGGER),
        log_level=ACCESS_LOG_LEVEL,
    )
