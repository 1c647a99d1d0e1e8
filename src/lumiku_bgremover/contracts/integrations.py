"""Events of other Lumiku apps that start removals.

We do not own these shapes: unknown fields are ignored. Whether an event starts
a removal at all is decided by the user's integration settings; `tier` defaults
to standard. Each event's `event_id` (scoped by its app) is the idempotency key.
Without a `correlation`, the service correlates with `{app, <project/pose/job id>}`.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from lumiku_bgremover.contracts.common import (
    MAX_IMAGES,
    AwareDatetime,
    Correlation,
    Filename,
    ForeignEvent,
    Ident,
    ImageRefField,
    Tier,
    UserId,
)


class AvatarImage(ForeignEvent, frozen=True, kw_only=True):
    """One avatar of a project."""

    avatar_id: Ident
    image: ImageRefField
    filename: Filename | None = None


class AvatarProjectCompleted(ForeignEvent, frozen=True, kw_only=True):
    """Avatar Creator finished a project: remove the backgrounds of its avatars."""

    event_id: Ident
    user_id: UserId
    project_id: Ident
    avatars: Annotated[tuple[AvatarImage, ...], msgspec.Meta(min_length=1, max_length=MAX_IMAGES)]
    tier: Tier = Tier.STANDARD
    correlation: Correlation | None = None
    completed_at: AwareDatetime | None = None


class PoseGenerated(ForeignEvent, frozen=True, kw_only=True):
    """Pose Generator made an image: remove its background."""

    event_id: Ident
    user_id: UserId
    pose_id: Ident
    image: ImageRefField
    filename: Filename | None = None
    tier: Tier = Tier.STANDARD
    correlation: Correlation | None = None
    generated_at: AwareDatetime | None = None


class UpscalerCompleted(ForeignEvent, frozen=True, kw_only=True):
    """Upscaler finished a job: the upscale-then-remove pipeline removes the background."""

    event_id: Ident
    user_id: UserId
    job_id: Ident
    result: ImageRefField
    filename: Filename | None = None
    scale: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None
    tier: Tier = Tier.STANDARD
    correlation: Correlation | None = None
    completed_at: AwareDatetime | None = None
