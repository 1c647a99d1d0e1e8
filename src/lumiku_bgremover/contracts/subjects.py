"""Every NATS subject of the service, and the one registry that documents them.

Constants are base names; `with_prefix` applies the deployment's prefix (such as
`"t123."` to isolate a test run, `""` in production). The `REGISTRY` drives the
JSON Schemas, the AsyncAPI document and `contracts/README.md`, so they agree.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

import msgspec

from lumiku_bgremover.contracts import (
    admin,
    inbound,
    integrations,
    outbound,
    replies,
    usersettings,
    work,
)
from lumiku_bgremover.contracts.common import USER_ID_PATTERN
from lumiku_bgremover.contracts.work import Lane

BATCH_REQUESTED: Final = "bgremove.batch.requested"
IMAGE_REQUESTED: Final = "bgremove.image.requested"
BATCH_CANCEL: Final = "bgremove.batch.cancel"
AVATAR_PROJECT_COMPLETED: Final = "avatar.project.completed"
POSE_GENERATED: Final = "pose.generated"
UPSCALER_COMPLETED: Final = "upscaler.completed"
QUOTE: Final = "bgremove.quote"
BATCH_STATUS: Final = "bgremove.batch.status"
SETTINGS_GET: Final = "bgremove.settings.get"
SETTINGS_SET: Final = "bgremove.settings.set"
#: Root of the work-queue subjects: publish to `<root>.<lane>.<user_id>`.
WORK_ROOT: Final = "bgremove.work"
#: The work subject as a template (AsyncAPI channel address).
WORK_ADDRESS: Final = WORK_ROOT + ".{lane}.{user_id}"
BATCH_ACCEPTED: Final = "bgremove.batch.accepted"
REQUEST_REJECTED: Final = "bgremove.request.rejected"
ITEM_DONE: Final = "bgremove.item.done"
ITEM_FAILED: Final = "bgremove.item.failed"
BATCH_PROGRESS: Final = "bgremove.batch.progress"
BATCH_COMPLETED: Final = "bgremove.batch.completed"
UPSCALER_REQUESTED: Final = "upscaler.requested"
ADMIN_CREDITS_GRANT: Final = "bgremove.admin.credits.grant"
ADMIN_CREDITS_BALANCE: Final = "bgremove.admin.credits.balance"
ADMIN_SUBSCRIPTION_SET: Final = "bgremove.admin.subscription.set"
ADMIN_SUBSCRIPTION_SHOW: Final = "bgremove.admin.subscription.show"

#: Requests to this service (the requests stream).
REQUEST_SUBJECTS: Final = (BATCH_REQUESTED, IMAGE_REQUESTED, BATCH_CANCEL)
#: Other apps' events that start removals (the integrations stream).
INTEGRATION_SUBJECTS: Final = (AVATAR_PROJECT_COMPLETED, POSE_GENERATED, UPSCALER_COMPLETED)
#: Operator subjects, answered only with `ADMIN_SUBJECTS_ENABLED` (core NATS, no stream).
ADMIN_SUBJECTS: Final = (
    ADMIN_CREDITS_GRANT,
    ADMIN_CREDITS_BALANCE,
    ADMIN_SUBSCRIPTION_SET,
    ADMIN_SUBSCRIPTION_SHOW,
)
#: Core-NATS request-reply subjects (no stream), the admin ones included.
REQUEST_REPLY_SUBJECTS: Final = (
    QUOTE,
    BATCH_STATUS,
    SETTINGS_GET,
    SETTINGS_SET,
    *ADMIN_SUBJECTS,
)
#: Events this service publishes (the events stream), the Upscaler handover included.
EVENT_SUBJECTS: Final = (
    BATCH_ACCEPTED,
    REQUEST_REJECTED,
    ITEM_DONE,
    ITEM_FAILED,
    BATCH_PROGRESS,
    BATCH_COMPLETED,
    UPSCALER_REQUESTED,
)

_PREFIX = re.compile(r"^([A-Za-z0-9_-]+\.)*$")
_USER_ID = re.compile(USER_ID_PATTERN)


def with_prefix(prefix: str, subject: str) -> str:
    """`subject` under the deployment prefix: tokens each ending in `.`, or `""`."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"subject prefix must be tokens each ending in '.', got {prefix!r}")
    if not subject:
        raise ValueError("subject is empty")
    return prefix + subject


def work_subject(lane: Lane, user_id: str, prefix: str = "") -> str:
    """Where a work item is published: `[prefix]bgremove.work.<lane>.<user_id>`."""
    if not _USER_ID.match(user_id):
        raise ValueError(f"not a valid user id for a subject: {user_id!r}")
    return with_prefix(prefix, f"{WORK_ROOT}.{Lane(lane).value}.{user_id}")


def work_filter(lane: Lane, partition: int, prefix: str = "") -> str:
    """Consumer filter of one partition of a lane: `...work.<lane>.<partition>.*`."""
    if partition < 0:
        raise ValueError(f"partition must not be negative, got {partition}")
    return with_prefix(prefix, f"{WORK_ROOT}.{Lane(lane).value}.{partition}.*")


def parse_work_subject(subject: str, prefix: str = "") -> tuple[Lane, int, str]:
    """`(lane, partition, user_id)` of a stored work subject (after the transform)."""
    root = with_prefix(prefix, WORK_ROOT) + "."
    parts = subject.removeprefix(root).split(".") if subject.startswith(root) else []
    if len(parts) != 3 or not parts[1].isdigit() or parts[0] not in set(Lane):  # noqa: PLR2004
        raise ValueError(f"not a stored work subject: {subject!r}")
    return Lane(parts[0]), int(parts[1]), parts[2]


class Direction(enum.StrEnum):
    """Which way a subject carries messages, seen from this service."""

    IN = "in"
    OUT = "out"
    REQUEST_REPLY = "request-reply"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Contract:
    """One subject: its direction, message type(s), reply type(s) and meaning."""

    subject: str
    direction: Direction
    messages: tuple[type[msgspec.Struct], ...]
    summary: str
    replies: tuple[type[msgspec.Struct], ...] = ()

    @property
    def jetstream(self) -> bool:
        """True when the subject is stored in a stream (all but request-reply)."""
        return self.direction is not Direction.REQUEST_REPLY

    @property
    def channel_id(self) -> str:
        """A camelCase identifier of the subject, parameters left out (`bgremoveWork`)."""
        words: list[str] = re.findall(r"[A-Za-z0-9]+", re.sub(r"\{[^}]*\}", "", self.subject))
        return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


_IN, _OUT, _RR, _INT = Direction.IN, Direction.OUT, Direction.REQUEST_REPLY, Direction.INTERNAL

#: Every subject of the service, in the order the documents list them.
REGISTRY: Final[tuple[Contract, ...]] = (
    Contract(
        BATCH_REQUESTED,
        _IN,
        (inbound.BatchRequested,),
        "1-500 images at one tier, paid in credits up front; `request_id` is the "
        "idempotency key. Answered by `bgremove.batch.accepted` or `bgremove.request.rejected`.",
    ),
    Contract(
        IMAGE_REQUESTED,
        _IN,
        (inbound.ImageRequested,),
        "One image; the subscription's daily quota is used first when the plan covers the "
        "tier, else credits.",
    ),
    Contract(
        BATCH_CANCEL,
        _IN,
        (inbound.BatchCancel,),
        "Cancel a batch's pending images (owner only); they end `cancelled` and are "
        "refunded. Answered by `item.failed` (`cancelled`) per stopped image and "
        "`batch.progress`, then `batch.completed`, or by "
        "`request.rejected` (`not_found`, `batch_finished`, `nothing_to_cancel`).",
    ),
    Contract(
        AVATAR_PROJECT_COMPLETED,
        _IN,
        (integrations.AvatarProjectCompleted,),
        "From Avatar Creator: a project's avatars become one batch (credits, volume "
        "discount) when the event has a `removal` block or the user's avatar-creator "
        "setting is on; each `item.done` and `item.failed` names its `source_id` "
        "(the avatar id).",
    ),
    Contract(
        POSE_GENERATED,
        _IN,
        (integrations.PoseGenerated,),
        "From Pose Generator: one image (quota first, then credits) when the event has a "
        "`removal` block or the user's pose-generator setting is on.",
    ),
    Contract(
        UPSCALER_COMPLETED,
        _IN,
        (integrations.UpscalerCompleted,),
        "From Upscaler: with a `then` step for `bgremove` (or the user's upscaler setting "
        "on), the upscale-then-remove pipeline removes the upscaled image's background.",
    ),
    Contract(
        QUOTE,
        _RR,
        (replies.QuoteRequest,),
        "Price, discount, pricing type, quota left, balance and whether it is sufficient. "
        "Nothing is charged.",
        (replies.QuoteReply, replies.ErrorReply),
    ),
    Contract(
        BATCH_STATUS,
        _RR,
        (replies.BatchStatusRequest,),
        "Progress of one batch; another user's batch answers `not_found`.",
        (replies.BatchStatusReply, replies.ErrorReply),
    ),
    Contract(
        SETTINGS_GET,
        _RR,
        (usersettings.SettingsGetRequest,),
        "A user's integration settings (every app, or one); an app never set reads as off.",
        (usersettings.SettingsReply, replies.ErrorReply),
    ),
    Contract(
        SETTINGS_SET,
        _RR,
        (usersettings.SettingsSetRequest,),
        "Replace the user's integration setting for one app; answers the stored setting.",
        (usersettings.SettingsReply, replies.ErrorReply),
    ),
    Contract(
        ADMIN_CREDITS_GRANT,
        _RR,
        (admin.CreditGrantRequest,),
        "Admin (only with `ADMIN_SUBJECTS_ENABLED`): add credits, once per `idempotency_key`.",
        (admin.CreditGrantReply, replies.ErrorReply),
    ),
    Contract(
        ADMIN_CREDITS_BALANCE,
        _RR,
        (admin.CreditBalanceRequest,),
        "Admin (only with `ADMIN_SUBJECTS_ENABLED`): a user's credit balance.",
        (admin.CreditBalanceReply, replies.ErrorReply),
    ),
    Contract(
        ADMIN_SUBSCRIPTION_SET,
        _RR,
        (admin.SubscriptionSetRequest,),
        "Admin (only with `ADMIN_SUBJECTS_ENABLED`): give a user a plan from now, replacing "
        "an active one.",
        (admin.SubscriptionReply, replies.ErrorReply),
    ),
    Contract(
        ADMIN_SUBSCRIPTION_SHOW,
        _RR,
        (admin.SubscriptionShowRequest,),
        "Admin (only with `ADMIN_SUBJECTS_ENABLED`): a user's active subscription and "
        "today's quota.",
        (admin.SubscriptionReply, replies.ErrorReply),
    ),
    Contract(
        WORK_ADDRESS,
        _INT,
        (work.WorkItem,),
        "Work-queue stream of per-image items, stored as `bgremove.work.<lane>.<partition>."
        "<user_id>` (partition = hash of the user id); interactive before bulk; acked "
        "once the result is durable.",
    ),
    Contract(
        BATCH_ACCEPTED,
        _OUT,
        (outbound.BatchAccepted,),
        "The request was accepted and charged exactly once; its images are queued.",
    ),
    Contract(
        REQUEST_REJECTED,
        _OUT,
        (outbound.RequestRejected,),
        "The request was refused with a machine-readable `code`; nothing was charged.",
    ),
    Contract(
        ITEM_DONE,
        _OUT,
        (outbound.ItemDone,),
        "One image finished: result object ref, presigned URL and its expiry.",
    ),
    Contract(
        ITEM_FAILED,
        _OUT,
        (outbound.ItemFailed,),
        "One image failed: a `FailCode` and the credits refunded for it now.",
    ),
    Contract(
        BATCH_PROGRESS,
        _OUT,
        (outbound.BatchProgress,),
        "Throttled progress counts of a batch.",
    ),
    Contract(
        BATCH_COMPLETED,
        _OUT,
        (outbound.BatchCompleted,),
        "The batch is final: counts, ZIP ref and URL, credits charged and refunded.",
    ),
    Contract(
        UPSCALER_REQUESTED,
        _OUT,
        (outbound.UpscalerRequested,),
        "The remove-then-upscale pipeline hands one result over to the Upscaler.",
    ),
)


def message_types() -> tuple[type[msgspec.Struct], ...]:
    """Every message and reply type in the registry, once each, in registry order."""
    seen: dict[type[msgspec.Struct], None] = {}
    for contract in REGISTRY:
        for kind in (*contract.messages, *contract.replies):
            seen.setdefault(kind, None)
    return tuple(seen)


def contract_for(subject: str) -> Contract:
    """The registry entry of a base subject (the work subject by its template)."""
    for contract in REGISTRY:
        if contract.subject == subject:
            return contract
    raise KeyError(subject)
