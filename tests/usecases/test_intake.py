"""Intake on the in-memory bus: what is queued, published and charged for each request."""

import msgspec
import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.storage.base import StorageError
from tests.usecases.conftest import LIMITS, Wired, png

pytestmark = pytest.mark.integration


def batch_body(request_id: str, user: str, refs: list[dict[str, str]], **extra: object) -> bytes:
    images = [{"filename": f"p{i}.png", "ref": ref} for i, ref in enumerate(refs)]
    body = {"request_id": request_id, "user_id": user, "tier": "standard", "images": images,
            "correlation": {"app": "web", "ref": request_id}, **extra}  # fmt: skip
    return msgspec.json.encode(body)


async def test_missing_and_oversize_sources_fail_alone_and_are_not_charged(wired: Wired) -> None:
    await wired.grant("ann", 100)
    refs = [await wired.upload("ann", f"p{i}.png", png()) for i in range(4)]
    refs[1] = {"bucket": refs[1]["bucket"], "key": "originals/ann/missing.png"}
    refs[3] = await wired.upload("ann", "huge.png", b"x" * (LIMITS.max_image_bytes + 1))
    await wired.intake.on_batch(batch_body("r-mixed", "ann", refs))

    assert [item.index for item in wired.queue.items] == [0, 2]
    [accepted] = wired.events.of(subjects.BATCH_ACCEPTED)
    assert (accepted["count"], accepted["priced_count"], accepted["credits_charged"]) == (4, 2, 16)
    failed = {e["index"]: e for e in wired.events.of(subjects.ITEM_FAILED)}
    assert {i: e["code"] for i, e in failed.items()} == {1: "source_not_found",
                                                          3: "source_too_large"}  # fmt: skip
    assert all(e["credits_refunded"] == 0 for e in failed.values())
    assert all(e["correlation"] == {"app": "web", "ref": "r-mixed"} for e in failed.values())
    assert sorted(await wired.ledger("ann")) == [("batch_charge", -16), ("grant", 100)]


async def test_the_same_request_again_charges_and_queues_nothing_new(wired: Wired) -> None:
    await wired.grant("bea", 100)
    gone = {"bucket": "lumiku-bgremover", "key": "originals/bea/gone.png"}
    refs = [await wired.upload("bea", "a.png", png()), gone]
    for _ in range(3):
        await wired.intake.on_batch(batch_body("r-again", "bea", refs))
    assert len(wired.queue.items) == 1
    assert len(wired.events.of(subjects.BATCH_ACCEPTED)) == 1
    assert len(wired.events.of(subjects.ITEM_FAILED)) == 1
    assert await wired.balance("bea") == 100 - 8


async def test_a_request_none_of_whose_images_can_run_is_refused(wired: Wired) -> None:
    await wired.grant("cat", 100)
    refs = [{"bucket": "lumiku-bgremover", "key": f"originals/cat/none-{i}.png"} for i in range(2)]
    await wired.intake.on_batch(batch_body("r-none", "cat", refs))
    [rejected] = wired.events.of(subjects.REQUEST_REJECTED)
    assert (rejected["code"], rejected["path"]) == ("no_runnable_images", "$.images")
    assert "$.images[1]: source_not_found" in rejected["message"]
    assert wired.queue.items == []
    assert await wired.balance("cat") == 100


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        ({"key": "originals/someone-else/a.png"}, "forbidden_source", "$.images[0].ref"),
        ({"key": "originals/dan/../eve/a.png"}, "invalid_request", "$.images[0].ref.key"),
        ({"size_bytes": LIMITS.max_image_bytes + 1}, "image_too_large", "$.images[0].size_bytes"),
    ],
)
async def test_what_the_request_itself_gets_wrong_refuses_it_whole(
    wired: Wired, change: dict[str, object], code: str, path: str
) -> None:
    await wired.grant("dan", 100)
    good = await wired.upload("dan", "a.png", png())
    first: dict[str, object] = {"filename": "a.png", "ref": dict(good)}
    if "key" in change:
        first["ref"] = {**good, "key": change["key"]}
    else:
        first.update(change)
    body = {"request_id": "r-bad", "user_id": "dan", "tier": "basic",
            "images": [first, {"filename": "b.png", "ref": good}]}  # fmt: skip
    await wired.intake.on_batch(msgspec.json.encode(body))
    [rejected] = wired.events.of(subjects.REQUEST_REJECTED)
    assert (rejected["code"], rejected["path"]) == (code, path)
    assert wired.queue.items == []
    assert await wired.balance("dan") == 100


async def test_a_storage_outage_at_intake_is_retried_not_refused(wired: Wired) -> None:
    await wired.grant("eve", 100)
    ref = await wired.upload("eve", "a.png", png())

    async def down(*_: object, **__: object) -> None:
        raise StorageError("connection refused")

    wired.store.stat = down  # type: ignore[method-assign]
    with pytest.raises(Exception, match="connection refused"):
        await wired.intake.on_batch(batch_body("r-outage", "eve", [ref]))
    assert wired.events.events == []
    assert await wired.balance("eve") == 100


async def test_a_single_image_with_a_missing_source_is_refused(wired: Wired) -> None:
    await wired.grant("fay", 100)
    gone = {"bucket": "lumiku-bgremover", "key": "originals/fay/a.png"}
    body = {"request_id": "s-gone", "user_id": "fay", "tier": "basic",
            "image": {"filename": "a.png", "ref": gone}}  # fmt: skip
    await wired.intake.on_image(msgspec.json.encode(body))
    [rejected] = wired.events.of(subjects.REQUEST_REJECTED)
    assert (rejected["code"], rejected["path"]) == ("no_runnable_images", "$.image.ref")
    assert await wired.balance("fay") == 100


async def test_malformed_bodies_are_answered_and_never_raise(wired: Wired) -> None:
    await wired.intake.on_batch(b"not json")
    await wired.intake.on_batch(b'{"request_id": "r-x", "user_id": "gus", "tier": "gold"}')
    codes = [e["code"] for e in wired.events.of(subjects.REQUEST_REJECTED)]
    assert codes == ["invalid_request", "unknown_tier"]
    assert wired.events.of(subjects.REQUEST_REJECTED)[1]["request_id"] == "r-x"
