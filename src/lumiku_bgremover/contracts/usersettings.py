"""A user's integration settings per app, read and written over request-reply.

`bgremove.settings.get` answers the user's settings (every app, or one); a
`bgremove.settings.set` replaces one app's setting and answers the result.
Owner only: a request names its `user_id` and only ever sees or changes that
user's settings.
"""

from __future__ import annotations

from lumiku_bgremover.contracts.common import (
    App,
    AwareDatetime,
    Message,
    OutputOptions,
    Tier,
    UserId,
)
from lumiku_bgremover.contracts.inbound import UpscaleStep


class IntegrationSetting(Message, frozen=True, kw_only=True):
    """Whether an app's events start removals without asking, and how.

    `then_upscale` sends each result on to the Upscaler (remove-then-upscale);
    it means nothing for the `upscaler` app itself (upscale-then-remove).
    """

    app: App
    enabled: bool = False
    tier: Tier = Tier.STANDARD
    options: OutputOptions = OutputOptions()
    then_upscale: UpscaleStep | None = None


class SettingsGetRequest(Message, frozen=True, kw_only=True):
    """Ask for a user's settings: every app, or only `app`."""

    user_id: UserId
    app: App | None = None


class SettingsSetRequest(Message, frozen=True, kw_only=True):
    """Replace the user's setting for `setting.app`."""

    user_id: UserId
    setting: IntegrationSetting


class SettingsReply(Message, tag="ok", tag_field="status", frozen=True, kw_only=True):
    """A user's settings, one per app asked for (an app never set reads as off)."""

    user_id: UserId
    settings: tuple[IntegrationSetting, ...]
    updated_at: AwareDatetime | None = None
