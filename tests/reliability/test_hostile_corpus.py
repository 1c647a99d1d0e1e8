"""The hostile input corpus against the running service (`lumiku-bgremover run`).

Every case of `corpus/manifest.toml` is published by a plain NATS client under its
own user. Each gets the outcome `contracts/README.md` documents (a rejection with
its code and path, an item failure with its code and a full refund, or a correct
result), charges nothing it should not (the user's ledger, exactly), and is
followed on the same subject by a valid request that is served normally: no
hostile message stops a consumer. A final valid batch, the request consumers'
counters (nothing pending, nothing redelivered) and the service log (no
traceback) close the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import nats
import pytest

from lumiku_bgremover import billing
from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.db import connect
from lumiku_bgremover.provisioning import StreamNames, request_consumer_configs
from tests.integration.pipeline_harness import Client, batch_request
from tests.reliability.corpus import cases as corpus
from tests.reliability.corpus.cases import GRANTED, Case
from tests.reliability.corpus.generate import ensure
from tests.reliability.harness import eventually
from tests.reliability.stack import Stack, client_of

CANARY = "canary"
Event = dict[str, Any]


def addressee(case: Case, index: int) -> str:
    return f"h{index:03d}"


async def prepare(client: Client, stack: Stack, users: list[tuple[Case, str]]) -> None:
    """Credits and `good.png` for every user; each image case's file; planted objects."""
    good = ensure("good.png").read_bytes()
    async with connect(stack.database_url) as conn:
        for _case, user in users:
            await billing.grant(conn, user, GRANTED, idempotency_key=f"grant:{user}")
        await billing.grant(conn, CANARY, 100_000, idempotency_key="grant:canary")
    for case, user in [*users, (None, CANARY)]:
        await client.upload(user, "good.png", good)
        if case is None:
            continue
        upload = corpus.upload_path(case)
        if upload is not None:
            await client.store.put_bytes(
                corpus.image_key(case, user), upload.read_bytes(), "image/png"
            )
        if case.plant and case.key is not None:
            await client.store.put_bytes(case.key.replace("@USER@", user), good, "image/png")


def canary(subject: str, n: int, bucket: str) -> bytes:
    """A valid message on `subject` that the service serves (or answers) normally."""
    ref = corpus.good_ref(CANARY, bucket)
    request_id = f"canary-{n}"
    if subject == corpus.BATCH_REQUESTED:
        return json.dumps(batch_request(request_id, CANARY, [ref])).encode()
    if subject == corpus.IMAGE_REQUESTED:
        image = {"filename": "c.png", "ref": ref}
        body = {"request_id": request_id, "user_id": CANARY, "tier": "basic", "image": image}
        return json.dumps(body).encode()
    if subject == subjects.BATCH_CANCEL:  # answered: the canary owns no such batch
        return json.dumps({"batch_id": f"b_{request_id}", "user_id": CANARY}).encode()
    return json.dumps(_app_event(subject, request_id, ref)).encode()


def _app_event(subject: str, event_id: str, ref: dict[str, str]) -> dict[str, Any]:
    common = {"event_id": event_id, "user_id": CANARY, "removal": {"tier": "basic"}}
    if subject == subjects.AVATAR_PROJECT_COMPLETED:
        avatar = {"avatar_id": "av_1", "image": ref}
        return {**common, "project_id": f"p-{event_id}", "avatars": [avatar]}
    if subject == subjects.POSE_GENERATED:
        return {**common, "pose_id": f"pose-{event_id}", "image": ref}
    return {**common, "job_id": f"job-{event_id}", "result": ref,
            "then": {"service": "bgremove", "tier": "basic"}}  # fmt: skip


def canary_served(subject: str, n: int) -> Callable[[Client], bool]:
    """Whether the canary was served: its batch completed, or its cancel was answered."""
    request_id = f"canary-{n}"

    def served(client: Client) -> bool:
        if subject == subjects.BATCH_CANCEL:
            refused = client.events.of(subjects.REQUEST_REJECTED)
            return any(e.get("batch_id") == f"b_{request_id}" for e in refused)
        done = client.events.of(subjects.BATCH_COMPLETED)
        return any(
            e["request_id"].endswith(request_id) and e["status"] == "completed" for e in done
        )

    return served


def outcome(client: Client, case: Case, user: str) -> Event | None:
    """The event that settles the case, once it came."""
    if case.expect == "rejected":
        return _rejection(client.events.of(subjects.REQUEST_REJECTED), case, user)
    kind = subjects.ITEM_FAILED if case.expect == "failed" else subjects.ITEM_DONE
    mine = [e for e in client.events.of(kind) if e["user_id"] == user]
    completed = [e for e in client.events.of(subjects.BATCH_COMPLETED) if e["user_id"] == user]
    return mine[-1] if mine and completed else None


def _rejection(events: list[Event], case: Case, user: str) -> Event | None:
    owner = case.user or user
    for event in events:
        by_user = event.get("user_id") == owner
        by_request = event.get("user_id") is None and event.get("request_id") == case.request_id
        if by_user or by_request:
            return event
    return None


def anonymous_rejections(client: Client) -> list[Event]:
    return [
        e
        for e in client.events.of(subjects.REQUEST_REJECTED)
        if e.get("user_id") is None and e.get("request_id") is None
    ]


async def send_anonymous(client: Client, case: Case, body: bytes, n: int) -> Event:
    """Publish a case whose rejection names nobody, and take the next such rejection."""
    before = len(anonymous_rejections(client))
    await client.publish(case.subject, body)

    def arrived() -> bool:
        return len(anonymous_rejections(client)) > before

    await eventually(arrived, 60, f"the rejection of {case.id}")
    return anonymous_rejections(client)[before]


def check_outcome(case: Case, event: Event | None, user: str) -> list[str]:
    """What differs from the manifest (empty when the case behaved)."""
    if event is None:
        return [f"{case.id}: no outcome"]
    got: dict[str, Any] = {"code": event.get("code"), "path": event.get("path")}
    want: dict[str, Any] = {"code": case.code, "path": case.path}
    if case.expect == "failed":
        got, want = {"code": event["code"]}, {"code": case.code}
        if case.with_good:
            got["index"], want["index"] = event["index"], 1
    if case.expect == "done":
        got = {"size": (event["width"], event["height"])}
        want = {"size": (case.width, case.height)}
    return [] if got == want else [f"{case.id}: got {got}, want {want}"]


async def check_money(client: Client, stack: Stack, case: Case, user: str) -> list[str]:
    ledger = [e.reason for e in reversed(await client.ledger(user))]  # oldest first
    balance = await client.balance(user)
    problems = []
    if (tuple(ledger), balance) != (case.ledger, case.balance):
        problems.append(f"{case.id}: ledger {ledger} balance {balance}")
    if case.expect == "rejected":
        async with connect(stack.database_url) as conn:
            batches = await conn.fetchval("SELECT count(*) FROM batches WHERE user_id = $1", user)
        accepted = [e for e in client.events.of(subjects.BATCH_ACCEPTED) if e["user_id"] == user]
        if batches or accepted:
            problems.append(f"{case.id}: a batch was created for a rejected request")
    return problems


async def consumers_settled(stack: Stack) -> dict[str, tuple[int, int, int]]:
    """(pending, ack pending, redelivered) of every request and integration consumer."""
    settings = stack.settings
    names = StreamNames.of(settings.nats)
    durables = [(names.requests, c.durable_name or "") for c in
                request_consumer_configs(settings.nats).values()]  # fmt: skip
    durables += [
        (b.stream, b.durable) for b in settings.integrations.bindings(settings.nats.stream_prefix)
    ]
    nc = await nats.connect(stack.nats.url)
    try:
        js = nc.jetstream()
        infos = [await js.consumer_info(stream, durable) for stream, durable in durables]
    finally:
        await nc.close()
    return {
        i.name: (i.num_pending or 0, i.num_ack_pending or 0, i.num_redelivered or 0) for i in infos
    }


@pytest.mark.timeout(300)
async def test_every_hostile_input_gets_its_documented_outcome(stack: Stack) -> None:
    cases = corpus.load_cases()
    users = [(case, addressee(case, i)) for i, case in enumerate(cases)]
    service = await stack.service("corpus", FAKE_ENGINE_DELAY_S="0").start()
    try:
        async with client_of(stack) as client:
            await _run(client, stack, users)
        assert service.proc.alive
        assert "Traceback" not in service.proc.log()
    finally:
        service.proc.kill()


async def _run(client: Client, stack: Stack, users: list[tuple[Case, str]]) -> None:
    bucket = stack.s3.bucket
    await prepare(client, stack, users)
    anonymous: dict[str, Event] = {}
    canaries: list[tuple[str, int]] = []
    for n, (case, user) in enumerate(users):
        body = corpus.request_body(case, user, bucket)
        if case.anonymous:
            anonymous[case.id] = await send_anonymous(client, case, body, n)
        else:
            await client.publish(case.subject, body)
        await client.publish(case.subject, canary(case.subject, n, bucket))
        canaries.append((case.subject, n))

    def settled() -> bool:
        cases_done = all(
            case.anonymous or outcome(client, case, user) is not None for case, user in users
        )
        return cases_done and all(canary_served(s, n)(client) for s, n in canaries)

    await eventually(settled, 180, "every case settled and every canary served")
    problems: list[str] = []
    for case, user in users:
        event = anonymous[case.id] if case.anonymous else outcome(client, case, user)
        problems += check_outcome(case, event, user)
        problems += await check_money(client, stack, case, user)
    assert problems == [], "\n".join(problems)
    await _final_batch(client, bucket)
    counters = await consumers_settled(stack)
    assert len(counters) == 6  # batch, image, cancel; avatar, pose, upscaler
    assert counters == dict.fromkeys(counters, (0, 0, 0))


async def _final_batch(client: Client, bucket: str) -> None:
    """After the whole corpus, a valid batch of three images is served."""
    refs = [corpus.good_ref(CANARY, bucket)] * 3
    await client.publish(corpus.BATCH_REQUESTED, batch_request("canary-final", CANARY, refs))

    def completed() -> bool:
        done = client.events.of(subjects.BATCH_COMPLETED)
        return any(e["request_id"] == "canary-final" for e in done)

    await eventually(completed, 60, "the final batch completed")
    [final] = [
        e for e in client.events.of(subjects.BATCH_COMPLETED) if e["request_id"] == "canary-final"
    ]
    assert (final["status"], final["succeeded"], final["failed"]) == ("completed", 3, 0)
