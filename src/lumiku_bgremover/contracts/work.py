"""The internal work-queue item: one image of a batch or a single-image job."""

from __future__ import annotations

import enum

from lumiku_bgremover.contracts.common import (
    AwareDatetime,
    Correlation,
    Filename,
    Ident,
    ImageIndex,
    ImageRefField,
    Message,
    OutputOptions,
    RequestMode,
    Tier,
    UserId,
)
from lumiku_bgremover.contracts.inbound import DeclaredSize, UpscaleStep


class Lane(enum.StrEnum):
    """Work-queue lane: interactive (single images, small batches) goes before bulk."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


class WorkItem(Message, frozen=True, kw_only=True):
    """One image to process, published to `bgremove.work.<lane>.<user_id>`.

    The stream stores it as `bgremove.work.<lane>.<partition>.<user_id>`, the
    partition a hash of the user id, so users take turns. `item_id` is unique
    and is the key of every state change, so a redelivery is a no-op.
    """

    item_id: Ident
    batch_id: Ident
    user_id: UserId
    index: ImageIndex
    tier: Tier
    mode: RequestMode
    filename: Filename
    ref: ImageRefField
    options: OutputOptions
    lane: Lane
    size_bytes: DeclaredSize | None = None
    then_upscale: UpscaleStep | None = None
    source_id: Ident | None = None
    correlation: Correlation | None = None
    enqueued_at: AwareDatetime
