"""Dead letters: work items whose last delivery ended without an answer, not yet moved.

The server publishes a max-deliveries advisory for such an item into the dead-letter
stream; the running service's mover then fails and refunds the item. An advisory that
stays there means the mover could not do that yet (the database was down, say). An
operator can list those and replay them: the stuck work item is queued again with a
fresh delivery count (processing is idempotent by item id) and the advisory removed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.codec import ContractError, decode, encode
from lumiku_bgremover.contracts.work import WorkItem
from lumiku_bgremover.provisioning import StreamNames
from lumiku_bgremover.settings import NatsSettings

__all__ = ["DeadLetter", "Replay", "list_dead_letters", "replay"]

#: JetStream's error code for "no message found" (a deleted sequence).
NO_MESSAGE_FOUND = 10057


class Advisory(msgspec.Struct, frozen=True):
    """The fields of JetStream's max-deliveries advisory that matter here."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One advisory and the work item it names (None when that item is gone)."""

    seq: int  #: the advisory's sequence in the dead-letter stream
    consumer: str
    stream_seq: int  #: the work item's sequence in the work stream
    deliveries: int
    item: WorkItem | None


class Replay(enum.StrEnum):
    """What replaying one dead letter did."""

    REQUEUED = "requeued"
    GONE = "gone"  #: the item was moved or acked meanwhile; the advisory was removed


async def _item(js: JetStreamContext, stream: str, seq: int) -> WorkItem | None:
    try:
        stored = await js.get_msg(stream, seq)
    except NotFoundError:
        return None
    try:
        return decode(WorkItem, stored.data or b"")
    except ContractError:
        return None


async def _letter(js: JetStreamContext, names: StreamNames, seq: int) -> DeadLetter | None:
    try:
        raw = await js.get_msg(names.dead_letters, seq)
    except NotFoundError:
        return None
    try:
        advisory = msgspec.json.decode(raw.data or b"", type=Advisory)
    except msgspec.DecodeError:
        return None
    item = await _item(js, names.work, advisory.stream_seq)
    return DeadLetter(seq, advisory.consumer, advisory.stream_seq, advisory.deliveries, item)


async def list_dead_letters(
    js: JetStreamContext, settings: NatsSettings, *, limit: int = 100
) -> list[DeadLetter]:
    """Up to `limit` dead letters, oldest first."""
    names = StreamNames.of(settings)
    state = (await js.stream_info(names.dead_letters)).state
    letters: list[DeadLetter] = []
    if state.messages == 0:
        return letters
    for seq in range(state.first_seq, state.last_seq + 1):
        letter = await _letter(js, names, seq)
        if letter is not None:
            letters.append(letter)
        if len(letters) >= limit:
            break
    return letters


async def replay(js: JetStreamContext, settings: NatsSettings, seq: int) -> Replay:
    """Queue the item of dead letter `seq` again (before removing the stuck copy), then
    drop the advisory; `GONE` when the letter or its item no longer exists."""
    names = StreamNames.of(settings)
    letter = await _letter(js, names, seq)
    if letter is None:
        return Replay.GONE
    outcome = Replay.GONE
    if letter.item is not None:
        item = letter.item
        await js.publish(
            subjects.work_subject(item.lane, item.user_id, settings.subject_prefix),
            encode(item),
            timeout=settings.publish_timeout_s,
            stream=names.work,
            headers={"Nats-Msg-Id": f"{item.item_id}:replay:{letter.seq}"},
        )
        await _delete(js, names.work, letter.stream_seq)
        outcome = Replay.REQUEUED
    await _delete(js, names.dead_letters, letter.seq)
    return outcome


async def _delete(js: JetStreamContext, stream: str, seq: int) -> None:
    """Delete one message; one that is gone already is fine."""
    try:
        await js.delete_msg(stream, seq)
    except APIError as error:
        if not isinstance(error, NotFoundError) and error.err_code != NO_MESSAGE_FOUND:
            raise
