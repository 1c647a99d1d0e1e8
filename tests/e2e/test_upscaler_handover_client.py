"""Remove-then-upscale asked for in a plain request: a web client publishes
`bgremove.batch.requested` and `bgremove.image.requested` built from the contract's own
examples (plain nats-py, JSON, `Nats-Msg-Id`) with `then_upscale`, and listens as the
Upscaler would for `upscaler.requested`; the service runs as `lumiku-bgremover run`."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from tests.e2e.test_contract_client import CONTRACTS, schema
from tests.e2e.test_integrations_client import Apps, apps_on

pytestmark = pytest.mark.integration

USER = "usr_up"


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CONTRACTS / "examples" / f"{name}.json").read_text())
    return loaded


@pytest.fixture
async def web(service_env: dict[str, str]) -> AsyncIterator[Apps]:
    async with apps_on(service_env) as found:
        yield found


async def batch_request(web: Apps) -> dict[str, Any]:
    """The contract's batch example, for our user: two photos and one broken file."""
    request = example("BatchRequested")
    images = [{"filename": f"photo-{i}.png", "ref": await web.upload(USER, f"photo-{i}.png")}
              for i in range(2)]  # fmt: skip
    broken = {"bucket": web.env["S3_BUCKET"], "key": f"originals/{USER}/broken.png"}
    await asyncio.to_thread(web.s3.put_object, Body=b"\x89PNG not really", **_at(broken))
    images.insert(1, {"filename": "broken.png", "ref": broken})
    return {**request, "user_id": USER, "images": images, "then_upscale": {"scale": 4}}


def _at(ref: dict[str, str]) -> dict[str, str]:
    return {"Bucket": ref["bucket"], "Key": ref["key"]}


def handovers_follow_their_items(web: Apps, batch_id: str) -> list[dict[str, Any]]:
    """Each `item.done` of the batch is followed by exactly one `upscaler.requested`
    for the same item; returns the hand-overs in order."""
    seen = [(s, body) for s, _, body in web.inbox.seen if body.get("batch_id") == batch_id]
    done_at = {body["item_id"]: i for i, (s, body) in enumerate(seen) if s == "bgremove.item.done"}
    handed = [(i, body) for i, (s, body) in enumerate(seen) if s == "upscaler.requested"]
    assert sorted(body["item_id"] for _, body in handed) == sorted(done_at)
    assert all(i > done_at[body["item_id"]] for i, body in handed)
    return [body for _, body in handed]


def assert_handover(handover: dict[str, Any], done: dict[str, Any], scale: int) -> None:
    jsonschema.validate(handover, schema("UpscalerRequested"))
    assert handover.keys() == example("UpscalerRequested").keys()
    assert handover["image"] == done["result"]
    assert handover["scale"] == scale
    assert handover["correlation"] == done["correlation"]
    same = ("user_id", "batch_id", "item_id", "filename", "content_type", "url", "url_expires_at")
    assert {k: handover[k] for k in same} == {k: done[k] for k in same}
    assert handover["request_id"] == f"{done['item_id']}.upscale"


async def test_a_request_with_then_upscale_hands_each_result_over_once(web: Apps) -> None:
    await web.grant(USER, 100)
    request = await batch_request(web)
    await web.publish("bgremove.batch.requested", request, request["request_id"])
    await web.inbox.until("bgremove.batch.completed")

    [accepted] = web.inbox.of("bgremove.batch.accepted")
    assert (accepted["count"], accepted["credits_charged"]) == (3, 24)
    [failed] = web.inbox.of("bgremove.item.failed")
    assert (failed["filename"], failed["code"]) == ("broken.png", "decode_failed")
    done = {e["item_id"]: e for e in web.inbox.of("bgremove.item.done")}
    assert sorted(e["filename"] for e in done.values()) == ["photo-0.png", "photo-1.png"]
    handovers = handovers_follow_their_items(web, accepted["batch_id"])
    for handover in handovers:
        assert_handover(handover, done[handover["item_id"]], scale=4)
        assert handover["correlation"] == request["correlation"]
        assert handover["tier"] == request["tier"]
    assert failed["item_id"] not in {h["item_id"] for h in handovers}

    # the same request delivered again (a new message id, so the stream keeps it): the
    # service answers it with the same acceptance, and hands nothing over again
    await web.publish("bgremove.batch.requested", request, "redelivered")
    await web.inbox.until("bgremove.batch.accepted", 2)
    assert len(web.inbox.event_ids("bgremove.batch.accepted")) == 1  # one batch

    single = {**example("ImageRequested"), "user_id": USER}  # then_upscale: {scale: 2}
    single["image"] = {"filename": "profile.png", "ref": await web.upload(USER, "profile.png")}
    await web.publish("bgremove.image.requested", single, single["request_id"])
    await until_handed_over(web, single["correlation"])
    [one] = [e for e in web.inbox.of("bgremove.item.done") if e["item_id"] not in done]
    [handover] = handovers_follow_their_items(web, one["batch_id"])
    assert_handover(handover, one, scale=single["then_upscale"]["scale"])
    assert handover["correlation"] == single["correlation"]
    assert handover["tier"] == single["tier"]

    # the redelivered batch request, answered before, handed nothing over again
    assert len(handovers_follow_their_items(web, accepted["batch_id"])) == 2
    assert len(web.inbox.of("upscaler.requested")) == 3
    assert len(web.inbox.of("bgremove.item.done")) == 3
    assert await web.balance(USER) == 100 - 24 + 8 - 3  # the broken image refunded


async def until_handed_over(web: Apps, correlation: dict[str, str]) -> None:
    async with asyncio.timeout(60):
        while correlation not in [e["correlation"] for e in web.inbox.of("upscaler.requested")]:
            web.inbox.changed.clear()
            await web.inbox.changed.wait()
