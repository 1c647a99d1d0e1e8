"""Pure builder of `contracts/README.md` from the registry and the Structs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Final, TypeVar

import msgspec

from lumiku_bgremover.contracts import cloudevents as ce
from lumiku_bgremover.contracts import common
from lumiku_bgremover.contracts.apps import APPS_TEXT
from lumiku_bgremover.contracts.codes import FAIL_CODE_HELP, REJECT_CODE_HELP
from lumiku_bgremover.contracts.subjects import REGISTRY, Contract, Direction

E = TypeVar("E", bound=StrEnum)

_KIND: Final = {
    Direction.IN: "JetStream event",
    Direction.OUT: "JetStream event",
    Direction.INTERNAL: "JetStream work queue",
    Direction.REQUEST_REPLY: "core NATS request-reply",
}

_INTRO: Final = """\
# Message contracts

Every message of lumiku-bgremover: one JSON Schema (Draft 2020-12) per message in
[`schemas/`](schemas/), one hand-written example per message in
[`examples/`](examples/), and the AsyncAPI 3.0 document
[`asyncapi.yaml`](asyncapi.yaml). The schemas, the AsyncAPI document and this page
are generated from the msgspec Structs in `src/lumiku_bgremover/contracts/` by
`make contracts` (`python -m lumiku_bgremover.contracts.generate`); do not edit
them by hand. A unit test fails while they are stale, and checks every example
against its schema and its Struct.

Bodies are JSON. Fields not listed are refused (`invalid_request`) on the
messages this service owns; the events of other apps (Avatar Creator, Pose
Generator, Upscaler) may carry fields we do not know, which are ignored.
"""

_HEADERS: Final = f"""\
## Headers

Every event this service publishes carries the CloudEvents 1.0 attributes as
NATS headers (binary content mode), and JetStream's de-duplication id:

| header | value |
|---|---|
| `{ce.SPECVERSION}` | `{ce.SPEC_VERSION}` |
| `{ce.ID}` | unique event id, derived from what the event is about, so a re-publish repeats it |
| `{ce.TYPE}` | the base subject, such as `bgremove.item.done` (no deployment prefix) |
| `{ce.SOURCE}` | `{ce.DEFAULT_SOURCE}` |
| `{ce.TIME}` | RFC 3339 in UTC, such as `2025-01-31T08:15:00.250000Z` |
| `{ce.NATS_MSG_ID}` | equal to `{ce.ID}`: JetStream drops a duplicate inside its window |

A JetStream consumer of the events stream sees each event once. A plain core-NATS
subscription sees what was published, which can include a re-publish that the
stream dropped as a duplicate (after a retry or a crash): such a subscriber should
ignore an `{ce.ID}` it has already handled.

Publishers of requests should set `{ce.NATS_MSG_ID}` (the request id will do) so
a retried publish is stored once; `request_id` in the body is the idempotency
key either way: a repeated request never charges twice.

Subjects are shown without the deployment prefix: a deployment may prepend
tokens such as `t123.` to every subject (`NATS_SUBJECT_PREFIX`).
"""

_RULES: Final = f"""\
## Rules worth knowing

- Identifiers: `user_id` matches `{common.USER_ID_PATTERN}` (safe as a subject
  token and an object-key segment); `request_id`, `batch_id`, `item_id`,
  `event_id` match `{common.IDENT_PATTERN}`.
- `correlation` (`{{app, ref}}`) given on a request is echoed on every event the
  request causes.
- An image reference (`ImageRef`) is either `{{bucket, key}}` (the user's own
  prefix, or an allow-listed bucket) or `{{url}}` (https only, fetched under an
  SSRF guard), never both.
- File names: 1 to 255 characters, no `/` or `\\`, no control characters, not
  `.` or `..`.
- Output options: `png` (default), `webp` or `jpeg`. JPEG has no transparency:
  without a `background` it is composited on `{common.JPEG_DEFAULT_BACKGROUND}`.
  `crop_margin` (0 to {common.MAX_CROP_MARGIN} px) needs `crop_to_subject`;
  `mask_only` with a `background` is refused.
- Source images: {common.INPUT_FORMATS_TEXT}; anything else fails as
  `unsupported_format`.
- Every request gets an answer event: `bgremove.batch.accepted` or
  `bgremove.request.rejected` for a batch or image request; for a cancel, either
  `bgremove.item.failed` (code `cancelled`) for each image it stopped and
  `bgremove.batch.progress` (with the new `cancelled` count) at once, then
  `bgremove.batch.completed`, or `bgremove.request.rejected` (`not_found`,
  `batch_finished`, `nothing_to_cancel`; it names the `batch_id`). `not_found`
  answers a batch that is not the caller's, never saying whether it exists. A cancel
  sent again is answered again (a redelivery of the same stored message is not).
- What a request itself gets wrong (schema, counts, a declared `size_bytes` over
  the limit, a ref outside the user's prefix, a forbidden URL) refuses the whole
  request. A source found missing or too large when the request is checked fails
  that image alone (`bgremove.item.failed` with `source_not_found` or
  `source_too_large`, `credits_refunded` 0) and is never charged: the batch is
  priced on the other images (`BatchAccepted.priced_count`, discount band
  included) and runs them. A request none of whose images can run is refused
  (`no_runnable_images`).
- A batch ends `completed` when every image succeeded, `partial` when some did
  and others failed or were cancelled, `cancelled` when none succeeded and some
  were cancelled, else `failed`. `bgremove.batch.completed` is published after
  the batch's stored state is final, so a status request made on receiving it
  always reads the final status, and it is a batch's last event: every image's
  `bgremove.item.done` or `bgremove.item.failed` was published before it, after a
  crash or an outage too. `credits_charged - credits_refunded` is what
  the user paid: failed and cancelled images are refunded at the batch's
  effective per-image price.
- Credits are whole numbers. `per_image` is exact decimal text (`"7.6"`).
- Times are RFC 3339 with an offset.
- Replies are tagged by `status`: `"ok"` (the answer) or `"error"`
  (`ErrorReply`, with a `code` from the reject codes below).
"""


def _link(kind: type[msgspec.Struct]) -> str:
    name = kind.__name__
    return f"[{name}](schemas/{name}.json) ([example](examples/{name}.json))"


def _links(kinds: Iterable[type[msgspec.Struct]]) -> str:
    return "<br>".join(_link(kind) for kind in kinds)


def _row(contract: Contract) -> str:
    cells = (
        f"`{contract.subject}`",
        contract.direction.value,
        _KIND[contract.direction],
        _links(contract.messages),
        _links(contract.replies),
        contract.summary.replace("|", "\\|"),
    )
    return "| " + " | ".join(cells) + " |"


def _subjects_table() -> str:
    head = (
        "## Subjects\n\n"
        "| subject | direction | kind | message | reply | semantics |\n"
        "|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(_row(contract) for contract in REGISTRY) + "\n"


def _codes_table(title: str, help_: Mapping[E, str]) -> str:
    rows = "\n".join(f"| `{code.value}` | {text} |" for code, text in help_.items())
    return f"## {title}\n\n| code | meaning |\n|---|---|\n{rows}\n"


def readme_text() -> str:
    """The text of `contracts/README.md`."""
    sections = (
        _INTRO,
        _subjects_table(),
        _HEADERS,
        _RULES,
        APPS_TEXT,
        _codes_table("Reject codes (`RequestRejected`, `ErrorReply`)", REJECT_CODE_HELP),
        _codes_table("Fail codes (`ItemFailed`)", FAIL_CODE_HELP),
    )
    return "\n".join(sections)
