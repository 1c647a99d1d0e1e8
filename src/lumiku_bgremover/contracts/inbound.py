"""Requests other Lumiku apps publish to this service (JetStream events)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from lumiku_bgremover.contracts.common import (
    MAX_IMAGES,
    Correlation,
    Email,
    Filename,
    Ident,
    ImageRefField,
    Message,
    OutputOptions,
    Tier,
    UserId,
)

#: A size the sender declares for an image, in bytes (checked again when fetched).
DeclaredSize = Annotated[int, msgspec.Meta(ge=1, description="declared size in bytes")]


class ImageInput(Message, frozen=True, kw_only=True):
    """One image to process: its file name (kept for results and the ZIP) and source."""

    filename: Filename
    ref: ImageRefField
    size_bytes: DeclaredSize | None = None
    #: The caller's own id of this image (an avatar id), echoed on its `item.done`.
    source_id: Ident | None = None


class UpscaleStep(Message, frozen=True, kw_only=True):
    """Ask for the remove-then-upscale pipeline: each result goes on to the Upscaler."""

    scale: Literal[2, 4] = 2


class BatchRequested(Message, frozen=True, kw_only=True):
    """Remove the backgrounds of 1..500 images, paid in credits up front.

    `request_id` is the idempotency key: a repeated request never charges twice
    and gets the original batch's events again.
    """

    request_id: Ident
    user_id: UserId
    tier: Tier
    images: Annotated[tuple[ImageInput, ...], msgspec.Meta(min_length=1, max_length=MAX_IMAGES)]
    options: OutputOptions = OutputOptions()
    then_upscale: UpscaleStep | None = None
    correlation: Correlation | None = None
    #: Where to e-mail a summary when the batch is final (the `notifier` role sends it).
    notify_email: Email | None = None


class ImageRequested(Message, frozen=True, kw_only=True):
    """Remove the background of one image; a subscription's daily quota is used first.

    `request_id` is the idempotency key, as for a batch.
    """

    request_id: Ident
    user_id: UserId
    tier: Tier
    image: ImageInput
    options: OutputOptions = OutputOptions()
    then_upscale: UpscaleStep | None = None
    correlation: Correlation | None = None
    #: Where to e-mail a summary when the batch is final (the `notifier` role sends it).
    notify_email: Email | None = None


class BatchCancel(Message, frozen=True, kw_only=True):
    """Cancel a batch's pending images (refunded); images already done stay done.

    Only the owner can cancel; cancelling twice is a no-op.
    """

    batch_id: Ident
    user_id: UserId
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    correlation: Correlation | None = None
