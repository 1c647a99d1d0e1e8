"""Other apps' events as removal requests: decode, read the user's setting, decide, submit.

A malformed event is answered with `bgremove.request.rejected` (`invalid_request`,
the JSON path) and acknowledged: it never charges and never blocks the consumer.
An event that starts nothing (setting off, empty project, a step for another
service) is logged and acknowledged. Everything else goes through the pipeline's
intake, which prices, charges once (per derived request id) and queues.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TypeVar

import asyncpg

from lumiku_bgremover.contracts import (
    AvatarProjectCompleted,
    BatchRequested,
    ContractError,
    ImageRequested,
    IntegrationSetting,
    PoseGenerated,
    UpscalerCompleted,
)
from lumiku_bgremover.contracts.codec import Identity, decode, peek_identity
from lumiku_bgremover.contracts.common import App
from lumiku_bgremover.integrations import rules, store
from lumiku_bgremover.pipeline.announce import Announcer
from lumiku_bgremover.pipeline.intake import Intake

log = logging.getLogger(__name__)

E = TypeVar("E", AvatarProjectCompleted, PoseGenerated, UpscalerCompleted)
Decide = Callable[[E, IntegrationSetting | None], BatchRequested | ImageRequested | rules.Skip]


class IntegrationIntake:
    """Turns Avatar Creator, Pose Generator and Upscaler events into requests."""

    def __init__(self, pool: asyncpg.Pool, intake: Intake, announcer: Announcer) -> None:
        self._pool, self._intake, self._announcer = pool, intake, announcer

    async def on_avatar_project(self, data: bytes) -> None:
        """Handle a raw `avatar.project.completed` body."""
        await self._on(App.AVATAR_CREATOR, AvatarProjectCompleted, rules.avatar_request, data)

    async def on_pose(self, data: bytes) -> None:
        """Handle a raw `pose.generated` body."""
        await self._on(App.POSE_GENERATOR, PoseGenerated, rules.pose_request, data)

    async def on_upscaled(self, data: bytes) -> None:
        """Handle a raw `upscaler.completed` body."""
        await self._on(App.UPSCALER, UpscalerCompleted, rules.upscaled_request, data)

    async def _on(self, app: App, kind: type[E], decide: Decide[E], data: bytes) -> None:
        try:
            event = decode(kind, data)
        except ContractError as error:
            await self._malformed(app, data, error)
            return
        async with self._pool.acquire() as conn:
            setting = await store.get_setting(conn, event.user_id, app)
        request = decide(event, setting)
        if isinstance(request, rules.Skip):
            log.info("%s event %s starts nothing (code=%s): %s",
                     app.value, event.event_id, request.code.value, request.reason)  # fmt: skip
            return
        log.info("%s event %s becomes request %s", app.value, event.event_id, request.request_id)
        await self._intake.submit(request)

    async def _malformed(self, app: App, data: bytes, error: ContractError) -> None:
        seen = peek_identity(data)
        request_id = None if seen.request_id is None else rules.request_id_for(app, seen.request_id)
        identity = Identity(request_id, seen.user_id, seen.correlation)
        key = request_id or f"{app.value}:{hashlib.sha256(data).hexdigest()[:32]}"
        log.warning("malformed %s event %s (code=%s): %s",
                    app.value, key, error.code, error.message)  # fmt: skip
        await self._announcer.rejected(identity, error.code, error.message, error.path, key)
