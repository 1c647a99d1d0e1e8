"""Events of other Lumiku apps that start removals.

We do not own these shapes: unknown fields are ignored. Whether an event starts
a removal is decided by the event itself (a `removal` block: the user asked in
that app) or else by the user's integration setting for the app. Each event's
`event_id` (scoped by its app) is the idempotency key: the same event twice is
one batch. Without a `correlation`, the service correlates with
`{app, <project/pose/job id>}`.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from lumiku_bgremover.contracts.common import (
    MAX_IMAGES,
    AwareDatetime,
    Correlation,
    Email,
    Filename,
    ForeignEvent,
    Ident,
    ImageRefField,
    OutputOptions,
    Tier,
    UserId,
)
from lumiku_bgremover.contracts.inbound import UpscaleStep

#: The name a pipeline step uses to address this service.
SERVICE_NAME = "bgremove"


class RemovalBlock(ForeignEvent, frozen=True, kw_only=True):
    """The user asked for a removal in the other app: tier, output, what comes next."""

    tier: Tier = Tier.STANDARD
    options: OutputOptions = OutputOptions()
    then_upscale: UpscaleStep | None = None
    notify_email: Email | None = None


class PipelineStep(ForeignEvent, frozen=True, kw_only=True):
    """The step after the Upscaler; only a step whose `service` is `bgremove` is ours."""

    service: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    tier: Tier = Tier.STANDARD
    options: OutputOptions = OutputOptions()


class AvatarImage(ForeignEvent, frozen=True, kw_only=True):
    """One avatar of a project."""

    avatar_id: Ident
    image: ImageRefField
    filename: Filename | None = None


class AvatarProjectCompleted(ForeignEvent, frozen=True, kw_only=True):
    """Avatar Creator finished a project: remove the backgrounds of its avatars (one batch).

    An empty project is acknowledged and ignored.
    """

    event_id: Ident
    user_id: UserId
    project_id: Ident
    avatars: Annotated[tuple[AvatarImage, ...], msgspec.Meta(max_length=MAX_IMAGES)]
    removal: RemovalBlock | None = None
    correlation: Correlation | None = None
    completed_at: AwareDatetime | None = None


class PoseGenerated(ForeignEvent, frozen=True, kw_only=True):
    """Pose Generator made an image: remove its background (a single image, quota first)."""

    event_id: Ident
    user_id: UserId
    pose_id: Ident
    generation_id: Ident | None = None
    image: ImageRefField
    filename: Filename | None = None
    removal: RemovalBlock | None = None
    correlation: Correlation | None = None
    generated_at: AwareDatetime | None = None


class UpscalerCompleted(ForeignEvent, frozen=True, kw_only=True):
    """Upscaler finished a job: with a `then` step for `bgremove` (or the user's Upscaler
    setting on), the upscale-then-remove pipeline removes the upscaled image's background."""

    event_id: Ident
    user_id: UserId
    job_id: Ident
    result: ImageRefField
    filename: Filename | None = None
    scale: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None
    then: PipelineStep | None = None
    correlation: Correlation | None = None
    completed_at: AwareDatetime | None = None
