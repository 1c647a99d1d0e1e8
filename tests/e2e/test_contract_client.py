"""The running service as another Lumiku app sees it: a plain nats-py client and boto3,
knowing only `contracts/` (subjects as text, JSON bodies, the published JSON Schemas).

Nothing of the service's own code is used on the client side: what this test sees is
what the contract promises, to the field.
"""

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import nats
import pytest
from nats.aio.msg import Msg
from PIL import Image

from lumiku_bgremover import billing
from lumiku_bgremover.db import connect

pytestmark = pytest.mark.integration

CONTRACTS = Path(__file__).parents[2] / "contracts"
SCHEMA_OF = {
    "bgremove.batch.accepted": "BatchAccepted",
    "bgremove.request.rejected": "RequestRejected",
    "bgremove.item.done": "ItemDone",
    "bgremove.item.failed": "ItemFailed",
    "bgremove.batch.progress": "BatchProgress",
    "bgremove.batch.completed": "BatchCompleted",
}
USER = "usr_contract"


def documented_header(name: str) -> str:
    """A header's value as the contract's README table states it (`| `name` | `value` |`)."""
    text = (CONTRACTS / "README.md").read_text()
    [value] = re.findall(rf"^\| `{re.escape(name)}` \| `([^`]+)` \|$", text, flags=re.MULTILINE)
    return value


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CONTRACTS / "schemas" / f"{name}.json").read_text())
    return loaded


class Inbox:
    """Every event under the deployment prefix: subject, headers, body."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.seen, self.changed = prefix, [], asyncio.Event()
        self.seen: list[tuple[str, dict[str, str], dict[str, Any]]]

    async def on_message(self, msg: Msg) -> None:
        self.seen.append((msg.subject.removeprefix(self.prefix), dict(msg.headers or {}),
                          json.loads(msg.data)))  # fmt: skip
        self.changed.set()

    def of(self, subject: str) -> list[dict[str, Any]]:
        return [body for s, _, body in self.seen if s == subject]

    def event_ids(self, subject: str) -> set[str]:
        """The distinct `ce-id` headers seen on `subject`."""
        return {headers["ce-id"] for s, headers, _ in self.seen if s == subject}

    async def until(self, subject: str, count: int = 1, timeout_s: float = 60) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.of(subject)) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def app(service_env: dict[str, str]) -> AsyncIterator[tuple[nats.NATS, Inbox]]:
    nc = await nats.connect(service_env["NATS_URL"])
    inbox = Inbox(service_env["NATS_SUBJECT_PREFIX"])
    for subject in SCHEMA_OF:  # the events the contract lists, nothing of our own
        await nc.subscribe(service_env["NATS_SUBJECT_PREFIX"] + subject, cb=inbox.on_message)
    await nc.flush()
    try:
        yield nc, inbox
    finally:
        await nc.close()


def s3_client(env: dict[str, str]) -> Any:
    scheme = "https" if env["S3_SECURE"] == "true" else "http"
    return boto3.client(
        "s3", endpoint_url=f"{scheme}://{env['S3_ENDPOINT']}", region_name=env["S3_REGION"],
        aws_access_key_id=env["S3_ACCESS_KEY"], aws_secret_access_key=env["S3_SECRET_KEY"],
    )  # fmt: skip


def jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, format="JPEG")
    return out.getvalue()


async def test_a_mixed_batch_as_the_contract_describes_it(
    service_env: dict[str, str], app: tuple[nats.NATS, Inbox]
) -> None:
    nc, inbox = app
    prefix, bucket = service_env["NATS_SUBJECT_PREFIX"], service_env["S3_BUCKET"]
    async with connect(service_env["DATABASE_URL"]) as conn:  # an operator grants credits
        await billing.grant(conn, USER, 1000, idempotency_key="grant:contract")
    s3 = s3_client(service_env)
    images = []
    for i in range(3):
        key = f"originals/{USER}/photo-{i}.jpg"
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key, Body=jpeg((40 * i, 90, 200)))
        images.append({"filename": f"photo-{i}.jpg", "ref": {"bucket": bucket, "key": key}})
    images.append({"filename": "gone.jpg",
                   "ref": {"bucket": bucket, "key": f"originals/{USER}/gone.jpg"}})  # fmt: skip
    big_key = f"originals/{USER}/huge.jpg"  # 17 MB, no declared size
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=big_key, Body=bytes(17_000_000))
    images.append({"filename": "huge.jpg", "ref": {"bucket": bucket, "key": big_key}})
    request = {"request_id": "contract-1", "user_id": USER, "tier": "standard",
               "images": images, "correlation": {"app": "web", "ref": "session-9"}}  # fmt: skip

    js = nc.jetstream()
    await js.publish(prefix + "bgremove.batch.requested", json.dumps(request).encode(),
                     headers={"Nats-Msg-Id": "contract-1"})  # fmt: skip
    await inbox.until("bgremove.batch.completed")
    order = [subject for subject, _, _ in inbox.seen]
    ends = [i for i, s in enumerate(order) if s in ("bgremove.item.done", "bgremove.item.failed")]
    assert len(ends) == 5
    assert max(ends) < order.index("bgremove.batch.completed"), "batch.completed comes last"

    [accepted] = inbox.of("bgremove.batch.accepted")
    assert (accepted["count"], accepted["priced_count"]) == (5, 3)
    assert (accepted["credits_charged"], accepted["per_image"]) == (24, "8")
    failed = {e["filename"]: e for e in inbox.of("bgremove.item.failed")}
    assert {name: e["code"] for name, e in failed.items()} == {
        "gone.jpg": "source_not_found", "huge.jpg": "source_too_large"}  # fmt: skip
    assert {e["credits_refunded"] for e in failed.values()} == {0}
    done = inbox.of("bgremove.item.done")
    assert sorted(e["index"] for e in done) == [0, 1, 2]
    [completed] = inbox.of("bgremove.batch.completed")
    assert (completed["status"], completed["succeeded"], completed["failed"]) == ("partial", 3, 2)
    assert (completed["credits_charged"], completed["credits_refunded"]) == (24, 0)
    assert {e["correlation"]["ref"] for _, _, e in inbox.seen} == {"session-9"}

    for subject, headers, body in inbox.seen:  # every event: its schema, and its headers
        jsonschema.validate(body, schema(SCHEMA_OF[subject]))
        assert headers["ce-source"] == documented_header("ce-source") == "/lumiku/bgremover"
        assert headers["ce-type"] == subject
        assert headers["ce-specversion"] == "1.0"
        assert headers["Nats-Msg-Id"] == headers["ce-id"]

    reply = await nc.request(prefix + "bgremove.batch.status", json.dumps(
        {"user_id": USER, "batch_id": completed["batch_id"]}).encode(), timeout=10)  # fmt: skip
    status = json.loads(reply.data)
    jsonschema.validate(status, schema("BatchStatusReply"))
    assert (status["status"], status["batch_status"]) == ("ok", "partial")

    batch_id = completed["batch_id"]
    cancels = [
        {"batch_id": batch_id, "user_id": USER},  # every image has ended
        {"batch_id": "b_nosuchbatch", "user_id": USER},  # no such batch
        {"batch_id": batch_id, "user_id": "usr_someone_else"},  # not the caller's
        {"batch_id": batch_id, "user_id": USER},  # the same cancel again: answered again
    ]
    # what the events stream keeps (a core subscription also sees what JetStream de-duplicates)
    stored = await js.subscribe(prefix + "bgremove.request.rejected", ordered_consumer=True)
    for cancel in cancels:
        await js.publish(prefix + "bgremove.batch.cancel", json.dumps(cancel).encode())
    refused = [json.loads((await stored.next_msg(timeout=60)).data) for _ in cancels]
    assert sorted((r["code"], r["batch_id"], r["user_id"]) for r in refused) == sorted([
        ("batch_finished", batch_id, USER),
        ("batch_finished", batch_id, USER),
        ("not_found", "b_nosuchbatch", USER),
        ("not_found", batch_id, "usr_someone_else"),
    ])  # fmt: skip
    for answer in refused:
        jsonschema.validate(answer, schema("RequestRejected"))
    [missing] = [r for r in refused if r["batch_id"] == "b_nosuchbatch"]
    [foreign] = [r for r in refused if r["user_id"] == "usr_someone_else"]
    # a batch that is not the caller's reads exactly as one that does not exist
    assert foreign["message"] == missing["message"].replace("b_nosuchbatch", batch_id)
    assert foreign["path"] == missing["path"]

    async with connect(service_env["DATABASE_URL"]) as conn:
        entries = sorted((e.reason, e.amount) for e in await billing.ledger_entries(conn, USER))
        balance = await billing.balance(conn, USER)
    assert entries == [("batch_charge", -24), ("grant", 1000)]
    paid = completed["credits_charged"] - completed["credits_refunded"]
    assert balance == 1000 - paid == 1000 - 24  # the ledger is exact: charged - refunded
