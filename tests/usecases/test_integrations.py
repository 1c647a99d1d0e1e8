"""Other apps' events on the in-memory bus over a real PostgreSQL: which events start
removals, how they are paid, correlated and handed over, and that nothing else charges."""

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from lumiku_bgremover import billing
from lumiku_bgremover.contracts import IntegrationSetting, UpscaleStep, subjects
from lumiku_bgremover.contracts.common import App, Plan, Tier
from lumiku_bgremover.integrations import store
from lumiku_bgremover.integrations.intake import IntegrationIntake
from tests.integration.service import PINNED_NOW
from tests.usecases.conftest import Wired, png

pytestmark = pytest.mark.integration


def integrations(wired: Wired) -> IntegrationIntake:
    return IntegrationIntake(wired.pool, wired.intake, wired.announcer)


async def avatars(wired: Wired, user: str, count: int) -> list[dict[str, Any]]:
    return [
        {"avatar_id": f"av_{i}", "image": await wired.upload(user, f"a{i}.png", png())}
        for i in range(count)
    ]


def project(user: str, listed: list[dict[str, Any]], **extra: Any) -> bytes:
    body = {
        "event_id": "evt-1",
        "user_id": user,
        "project_id": "proj_9",
        "avatars": listed,
        "style": "anime",
        **extra,
    }  # fmt: skip  (style: a field we do not know)
    return msgspec.json.encode(body)


async def turn(wired: Wired, user: str, app: App, *, on: bool, **extra: Any) -> None:
    async with wired.pool.acquire() as conn:
        await store.put_setting(conn, user, IntegrationSetting(app=app, enabled=on, **extra))


async def test_a_project_with_a_removal_block_is_one_discounted_batch(wired: Wired) -> None:
    await wired.grant("ayu", 500)
    body = project("ayu", await avatars(wired, "ayu", 24), removal={"tier": "standard"})
    for _ in range(2):  # the same event twice is one batch
        await integrations(wired).on_avatar_project(body)
    [accepted] = wired.events.of(subjects.BATCH_ACCEPTED)
    assert (accepted["count"], accepted["discount_pct"], accepted["credits_charged"]) == (
        24,
        5,
        183,
    )  # fmt: skip  (24 x 8 = 192, 5 % off: 192 - 9)
    assert accepted["request_id"] == "avatar-creator:evt-1"
    await wired.work_all()
    done = wired.events.of(subjects.ITEM_DONE)
    assert sorted(e["source_id"] for e in done) == sorted(f"av_{i}" for i in range(24))
    assert {msgspec.json.encode(e["correlation"]) for e in done} == {
        b'{"app":"avatar-creator","ref":"proj_9"}'}  # fmt: skip
    assert len(wired.events.of(subjects.BATCH_COMPLETED)) == 1
    assert await wired.balance("ayu") == 500 - 183


async def test_a_failed_avatar_is_named_in_its_item_failed(wired: Wired) -> None:
    await wired.grant("abe", 100)
    listed = await avatars(wired, "abe", 2)
    gone = {"bucket": "lumiku-bgremover", "key": "originals/abe/gone.png"}
    broken = await wired.upload("abe", "broken.png", b"not an image at all")
    listed += [{"avatar_id": "av_gone", "image": gone}, {"avatar_id": "av_bad", "image": broken}]
    await integrations(wired).on_avatar_project(project("abe", listed, removal={}))
    await wired.work_all()
    failed = {
        e["source_id"]: (e["index"], e["code"]) for e in wired.events.of(subjects.ITEM_FAILED)
    }
    assert failed["av_gone"] == (2, "source_not_found")  # at intake: missing
    assert set(failed) == {"av_gone", "av_bad"}  # av_bad: at work, it does not decode
    assert failed["av_bad"][0] == 3
    done = wired.events.of(subjects.ITEM_DONE)
    assert sorted(e["source_id"] for e in done) == ["av_0", "av_1"]


async def test_the_setting_decides_when_the_event_does_not_ask(wired: Wired) -> None:
    await wired.grant("bea", 100)
    listed = await avatars(wired, "bea", 2)
    await integrations(wired).on_avatar_project(project("bea", listed))
    assert wired.events.events == []
    assert wired.queue.items == []
    await turn(wired, "bea", App.AVATAR_CREATOR, on=True, tier=Tier.BASIC)
    await integrations(wired).on_avatar_project(project("bea", listed, event_id="evt-2"))
    [accepted] = wired.events.of(subjects.BATCH_ACCEPTED)
    assert (accepted["tier"], accepted["credits_charged"]) == ("basic", 6)
    await turn(wired, "bea", App.AVATAR_CREATOR, on=False)
    await integrations(wired).on_avatar_project(project("bea", listed, event_id="evt-3"))
    assert len(wired.events.of(subjects.BATCH_ACCEPTED)) == 1
    assert await wired.balance("bea") == 100 - 6


async def test_an_empty_project_starts_nothing(wired: Wired) -> None:
    await turn(wired, "cat", App.AVATAR_CREATOR, on=True)
    await integrations(wired).on_avatar_project(project("cat", [], removal={}))
    assert wired.events.events == []


async def test_a_pose_uses_the_quota_when_the_plan_covers_it_else_credits(wired: Wired) -> None:
    await wired.grant("dan", 50)
    async with wired.pool.acquire() as conn:
        await billing.set_subscription(conn, "dan", Plan.STARTER, started_at=PINNED_NOW,
                                       expires_at=PINNED_NOW + timedelta(days=30))  # fmt: skip
    await turn(wired, "dan", App.POSE_GENERATOR, on=True)
    pose = {"event_id": "p-1", "user_id": "dan", "pose_id": "pose_1", "generation_id": "gen_7",
            "image": await wired.upload("dan", "pose.png", png())}  # fmt: skip
    await integrations(wired).on_pose(msgspec.json.encode(pose))
    industry = {**pose, "event_id": "p-2", "removal": {"tier": "industry"}}
    await integrations(wired).on_pose(msgspec.json.encode(industry))
    paid = [(e["pricing_type"], e["credits_charged"]) for e in
            wired.events.of(subjects.BATCH_ACCEPTED)]  # fmt: skip
    assert paid == [("subscription", 0), ("credits", 25)]
    await wired.work_all()
    done = wired.events.of(subjects.ITEM_DONE)
    assert [e["correlation"] for e in done] == [{"app": "pose-generator", "ref": "gen_7"}] * 2
    assert all(e["result"]["key"].startswith("results/dan/") for e in done)


async def test_remove_then_upscale_hands_the_result_over(wired: Wired) -> None:
    await wired.grant("eve", 50)
    await turn(wired, "eve", App.POSE_GENERATOR, on=True, then_upscale=UpscaleStep(scale=4))
    pose = {"event_id": "p-9", "user_id": "eve", "pose_id": "pose_9",
            "image": await wired.upload("eve", "pose.png", png())}  # fmt: skip
    await integrations(wired).on_pose(msgspec.json.encode(pose))
    await wired.work_all()
    [done] = wired.events.of(subjects.ITEM_DONE)
    [handover] = wired.events.of(subjects.UPSCALER_REQUESTED)
    assert handover["image"] == done["result"]
    assert (handover["scale"], handover["correlation"]) == (
        4, {"app": "pose-generator", "ref": "pose_9"})  # fmt: skip


async def test_upscale_then_remove_only_for_a_step_addressed_to_us(wired: Wired) -> None:
    await wired.grant("fay", 50)
    ref = await wired.upload("fay", "big.png", png((64, 48)))
    event = {"event_id": "u-1", "user_id": "fay", "job_id": "job_1", "result": ref, "scale": 4,
             "then": {"service": "captioner"}}  # fmt: skip
    await integrations(wired).on_upscaled(msgspec.json.encode(event))
    assert wired.events.events == []
    ours = {**event, "event_id": "u-2", "then": {"service": "bgremove", "tier": "basic"},
            "correlation": {"app": "web", "ref": "s-1"}}  # fmt: skip
    await integrations(wired).on_upscaled(msgspec.json.encode(ours))
    await wired.work_all()
    [done] = wired.events.of(subjects.ITEM_DONE)
    assert (done["correlation"], done["source_id"], done["width"]) == (
        {"app": "web", "ref": "s-1"}, "job_1", 64)  # fmt: skip
    assert wired.events.of(subjects.UPSCALER_REQUESTED) == []  # never loops back


@pytest.mark.parametrize(
    ("app", "body", "path"),
    [
        (App.AVATAR_CREATOR, b"not json", None),
        (App.AVATAR_CREATOR, b'{"event_id": "x-1", "user_id": "gus"}', "$"),
        (App.POSE_GENERATOR, b'{"event_id": "x-2", "user_id": "gus", "pose_id": 3}', None),
    ],
)
async def test_malformed_events_are_answered_with_a_code_and_charge_nothing(
    wired: Wired, app: App, body: bytes, path: str | None
) -> None:
    await wired.grant("gus", 50)
    handle = {App.AVATAR_CREATOR: integrations(wired).on_avatar_project,
              App.POSE_GENERATOR: integrations(wired).on_pose}[app]  # fmt: skip
    await handle(body)
    [rejected] = wired.events.of(subjects.REQUEST_REJECTED)
    assert rejected["code"] == "invalid_request"
    if path is not None:
        assert rejected["path"] == path
    assert await wired.balance("gus") == 50
    assert wired.queue.items == []
