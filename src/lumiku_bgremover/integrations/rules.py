"""Pure rules: whether an app's event starts a removal, and the request it becomes.

The event's own `removal` block (the user asked in that app) wins; else the user's
setting for the app, when enabled; else nothing runs. The request id is derived
from the app and the event id, so the same event twice is one batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from lumiku_bgremover.contracts import (
    AvatarProjectCompleted,
    BatchRequested,
    Correlation,
    ImageInput,
    ImageRequested,
    IntegrationSetting,
    PoseGenerated,
    RemovalBlock,
    UpscalerCompleted,
)
from lumiku_bgremover.contracts.common import App, OutputOptions, Tier
from lumiku_bgremover.contracts.inbound import UpscaleStep
from lumiku_bgremover.contracts.integrations import SERVICE_NAME

#: Longest identifier the contracts allow.
MAX_IDENT = 128


class SkipCode(StrEnum):
    """Why an event starts nothing: logged (`code=...`), never published."""

    #: No `removal` block, and the user's setting for the app is off (or never set).
    SETTING_OFF = "setting_off"
    #: An avatar project without avatars.
    EMPTY_PROJECT = "empty_project"
    #: An Upscaler `then` step addressed to another service.
    NOT_ADDRESSED_TO_US = "not_addressed_to_us"


@dataclass(frozen=True, slots=True)
class Skip:
    """The event starts nothing; `code` and `reason` are logged."""

    code: SkipCode
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """How the removal runs: from the event's block or the user's setting."""

    tier: Tier
    options: OutputOptions
    then_upscale: UpscaleStep | None
    notify_email: str | None = None


def request_id_for(app: App, event_id: str) -> str:
    """`<app>:<event id>`, or a digest of it when that is too long for an identifier."""
    plain = f"{app.value}:{event_id}"
    if len(plain) <= MAX_IDENT:
        return plain
    return f"{app.value}:sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"


def plan_for(
    app: App, removal: RemovalBlock | None, setting: IntegrationSetting | None
) -> Plan | Skip:
    """The event's block, else the enabled setting, else a skip."""
    if removal is not None:
        return Plan(removal.tier, removal.options, removal.then_upscale, removal.notify_email)
    if setting is None or not setting.enabled:
        return Skip(
            SkipCode.SETTING_OFF, f"no removal asked and the user's {app.value} setting is off"
        )
    return Plan(setting.tier, setting.options, setting.then_upscale)


def _correlation(given: Correlation | None, app: App, ref: str) -> Correlation:
    return given if given is not None else Correlation(app=app.value, ref=ref[:256])


def avatar_request(
    event: AvatarProjectCompleted, setting: IntegrationSetting | None
) -> BatchRequested | Skip:
    """A project's avatars as one batch (credits, volume discount), or why not."""
    if not event.avatars:
        return Skip(SkipCode.EMPTY_PROJECT, f"project {event.project_id} has no avatars")
    plan = plan_for(App.AVATAR_CREATOR, event.removal, setting)
    if isinstance(plan, Skip):
        return plan
    images = tuple(
        ImageInput(
            filename=avatar.filename or f"avatar-{index:03d}.png",
            ref=avatar.image,
            source_id=avatar.avatar_id,
        )
        for index, avatar in enumerate(event.avatars)
    )
    return BatchRequested(
        request_id=request_id_for(App.AVATAR_CREATOR, event.event_id),
        user_id=event.user_id, tier=plan.tier, images=images, options=plan.options,
        then_upscale=plan.then_upscale, notify_email=plan.notify_email,
        correlation=_correlation(event.correlation, App.AVATAR_CREATOR, event.project_id),
    )  # fmt: skip


def pose_request(event: PoseGenerated, setting: IntegrationSetting | None) -> ImageRequested | Skip:
    """A generated pose as a single image (quota first, then credits), or why not."""
    plan = plan_for(App.POSE_GENERATOR, event.removal, setting)
    if isinstance(plan, Skip):
        return plan
    generation = event.generation_id or event.pose_id
    image = ImageInput(
        filename=event.filename or "pose.png", ref=event.image, source_id=event.pose_id
    )
    return ImageRequested(
        request_id=request_id_for(App.POSE_GENERATOR, event.event_id),
        user_id=event.user_id, tier=plan.tier, image=image, options=plan.options,
        then_upscale=plan.then_upscale, notify_email=plan.notify_email,
        correlation=_correlation(event.correlation, App.POSE_GENERATOR, generation),
    )  # fmt: skip


def upscaled_request(
    event: UpscalerCompleted, setting: IntegrationSetting | None
) -> ImageRequested | Skip:
    """Upscale-then-remove: the upscaled image as a single image, or why not.

    A `then` step addressed to another service is not ours. Never upscales again
    (no `then_upscale`), so the two pipelines cannot loop.
    """
    step = event.then
    if step is not None and step.service != SERVICE_NAME:
        return Skip(
            SkipCode.NOT_ADDRESSED_TO_US,
            f"the next step is for {step.service!r}, not {SERVICE_NAME!r}",
        )
    block = None if step is None else RemovalBlock(tier=step.tier, options=step.options)
    plan = plan_for(App.UPSCALER, block, setting)
    if isinstance(plan, Skip):
        return plan
    image = ImageInput(
        filename=event.filename or "upscaled.png", ref=event.result, source_id=event.job_id
    )
    return ImageRequested(
        request_id=request_id_for(App.UPSCALER, event.event_id),
        user_id=event.user_id, tier=plan.tier, image=image, options=plan.options,
        correlation=_correlation(event.correlation, App.UPSCALER, event.job_id),
    )  # fmt: skip
