"""Integration settings and completion e-mail records in PostgreSQL (tables of 0006)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from lumiku_bgremover.billing import Conn
from lumiku_bgremover.contracts import IntegrationSetting
from lumiku_bgremover.contracts.common import App, OutputOptions, Tier
from lumiku_bgremover.contracts.inbound import UpscaleStep

_SELECT = (
    "SELECT app, enabled, tier, output_options, then_upscale_scale, updated_at"
    " FROM integration_settings WHERE user_id = $1"
)


def _setting(row: Any) -> IntegrationSetting:
    scale = row["then_upscale_scale"]
    return IntegrationSetting(
        app=App(row["app"]),
        enabled=row["enabled"],
        tier=Tier(row["tier"]),
        options=msgspec.convert(row["output_options"], OutputOptions),
        then_upscale=None if scale is None else UpscaleStep(scale=scale),
    )


async def get_setting(conn: Conn, user_id: str, app: App) -> IntegrationSetting | None:
    """The user's setting for `app`, or None when never set."""
    row = await conn.fetchrow(
        _SELECT + " AND app = $2",
        user_id, app.value,
    )  # fmt: skip
    return None if row is None else _setting(row)


async def list_settings(
    conn: Conn, user_id: str
) -> tuple[tuple[IntegrationSetting, ...], datetime | None]:
    """Every app's setting (an app never set reads as off) and the last change."""
    rows = await conn.fetch(_SELECT, user_id)
    stored = {App(row["app"]): _setting(row) for row in rows}
    changed = max((row["updated_at"] for row in rows), default=None)
    return tuple(stored.get(app, IntegrationSetting(app=app)) for app in App), changed


async def put_setting(conn: Conn, user_id: str, setting: IntegrationSetting) -> datetime:
    """Create or replace the user's setting for `setting.app`; returns when."""
    scale = None if setting.then_upscale is None else setting.then_upscale.scale
    stamp: datetime = await conn.fetchval(
        """
        INSERT INTO integration_settings
            (user_id, app, enabled, tier, output_options, then_upscale_scale)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (user_id, app) DO UPDATE SET
            enabled = EXCLUDED.enabled, tier = EXCLUDED.tier,
            output_options = EXCLUDED.output_options,
            then_upscale_scale = EXCLUDED.then_upscale_scale
        RETURNING updated_at
        """,
        user_id, setting.app.value, setting.enabled, setting.tier.value,
        msgspec.to_builtins(setting.options), scale,
    )  # fmt: skip
    return stamp


async def record_notification(conn: Conn, batch_id: str, user_id: str, email: str) -> None:
    """Remember that the batch's completion is to be e-mailed (once; a repeat is a no-op)."""
    await conn.execute(
        "INSERT INTO batch_notifications (batch_id, user_id, email) VALUES ($1, $2, $3)"
        " ON CONFLICT (batch_id) DO NOTHING",
        batch_id, user_id, email,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Notification:
    """A completion e-mail a batch asked for, and whether it went out."""

    batch_id: str
    user_id: str
    email: str
    attempts: int
    sent_at: datetime | None


async def lock_notification(conn: Conn, batch_id: str) -> Notification | None:
    """The batch's e-mail record, locked until the transaction ends (one sender at a time)."""
    row = await conn.fetchrow(
        "SELECT batch_id, user_id, email, attempts, sent_at FROM batch_notifications"
        " WHERE batch_id = $1 FOR UPDATE",
        batch_id,
    )
    return None if row is None else Notification(**dict(row))


async def mark_sent(conn: Conn, batch_id: str, when: datetime) -> None:
    """The e-mail went out."""
    await conn.execute(
        "UPDATE batch_notifications SET sent_at = $2, attempts = attempts + 1, last_error = NULL"
        " WHERE batch_id = $1 AND sent_at IS NULL",
        batch_id, when,
    )  # fmt: skip


async def mark_failed(conn: Conn, batch_id: str, error: str) -> int:
    """A send failed; returns the attempts so far."""
    attempts: int = await conn.fetchval(
        "UPDATE batch_notifications SET attempts = attempts + 1, last_error = $2"
        " WHERE batch_id = $1 RETURNING attempts",
        batch_id, error[:2000],
    )  # fmt: skip
    return attempts
