"""The admin subjects: grant credits, read balances, set and show subscriptions.

Registered only when `settings.admin_subjects_enabled`; otherwise nothing
subscribes and a requester gets no responders. Each subscriber is a thin shell
over `lumiku_bgremover.admin`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage

from lumiku_bgremover import admin
from lumiku_bgremover.billing import Conn
from lumiku_bgremover.contracts import (
    CreditBalanceRequest,
    CreditGrantRequest,
    SubscriptionSetRequest,
    SubscriptionShowRequest,
    subjects,
)
from lumiku_bgremover.handlers.replying import InjectedServices, respond
from lumiku_bgremover.services import Services
from lumiku_bgremover.settings import Settings

__all__ = ["ADMIN_QUEUE", "ROUTES", "answer_admin", "register_admin_handlers"]

#: Core-NATS queue group of the admin subjects (replicas share them).
ADMIN_QUEUE: Final = "bgremove-admin"

#: An admin operation: a connection, the decoded request and the services in; a reply out.
Operation = Callable[[Conn, Any, Services], Awaitable[msgspec.Struct]]


async def _grant(conn: Conn, request: CreditGrantRequest, _: Services) -> msgspec.Struct:
    return await admin.grant_credits(conn, request)


async def _balance(conn: Conn, request: CreditBalanceRequest, _: Services) -> msgspec.Struct:
    return await admin.credit_balance(conn, request)


async def _set(conn: Conn, request: SubscriptionSetRequest, services: Services) -> msgspec.Struct:
    tz = services.settings.timezone
    return await admin.set_subscription(conn, request, now=services.clock(), tz=tz)


async def _show(conn: Conn, request: SubscriptionShowRequest, services: Services) -> msgspec.Struct:
    tz = services.settings.timezone
    return await admin.show_subscription(conn, request, now=services.clock(), tz=tz)


#: Base subject -> (request type, operation).
ROUTES: Final[dict[str, tuple[type[msgspec.Struct], Operation]]] = {
    subjects.ADMIN_CREDITS_GRANT: (CreditGrantRequest, _grant),
    subjects.ADMIN_CREDITS_BALANCE: (CreditBalanceRequest, _balance),
    subjects.ADMIN_SUBSCRIPTION_SET: (SubscriptionSetRequest, _set),
    subjects.ADMIN_SUBSCRIPTION_SHOW: (SubscriptionShowRequest, _show),
}


async def answer_admin(services: Services, subject: str, body: bytes) -> bytes:
    """The encoded reply or `ErrorReply` to a raw request on the admin `subject` (base name)."""
    kind, operation = ROUTES[subject]

    async def answer(request: msgspec.Struct) -> msgspec.Struct:
        async with services.pool.acquire() as conn:
            return await operation(conn, request, services)

    return await respond(kind, body, answer, subject=subject)


def _register(broker: NatsBroker, settings: Settings, subject: str) -> None:
    prefixed = subjects.with_prefix(settings.nats.subject_prefix, subject)

    @broker.subscriber(prefixed, queue=ADMIN_QUEUE)
    async def on_admin(msg: NatsMessage, services: InjectedServices) -> bytes:
        return await answer_admin(services, subject, msg.body)


def register_admin_handlers(broker: NatsBroker, settings: Settings) -> bool:
    """Subscribe the admin subjects when enabled; returns whether it did."""
    if not settings.admin_subjects_enabled:
        return False
    for subject in ROUTES:
        _register(broker, settings, subject)
    return True
