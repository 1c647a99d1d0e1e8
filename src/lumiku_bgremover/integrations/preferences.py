"""The settings use cases behind `bgremove.settings.get` / `.set` and the CLI."""

from __future__ import annotations

from lumiku_bgremover.billing import Conn
from lumiku_bgremover.contracts import SettingsGetRequest, SettingsReply, SettingsSetRequest
from lumiku_bgremover.integrations import store


async def get_settings(conn: Conn, request: SettingsGetRequest) -> SettingsReply:
    """The user's settings: every app, or the one asked for."""
    found, changed = await store.list_settings(conn, request.user_id)
    if request.app is not None:
        found = tuple(s for s in found if s.app is request.app)
    return SettingsReply(user_id=request.user_id, settings=found, updated_at=changed)


async def set_setting(conn: Conn, request: SettingsSetRequest) -> SettingsReply:
    """Replace one app's setting; answers it as stored."""
    changed = await store.put_setting(conn, request.user_id, request.setting)
    stored = await store.get_setting(conn, request.user_id, request.setting.app)
    assert stored is not None
    return SettingsReply(user_id=request.user_id, settings=(stored,), updated_at=changed)
