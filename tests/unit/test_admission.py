"""Intake's pure rules: what refuses a request, which images run, and what they cost."""

import msgspec
import pytest

from lumiku_bgremover.contracts import BatchRequested, ImageRequested, RejectCode
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.pipeline.admission import (
    Rejection,
    SourceFailure,
    admit,
    check_request,
    judge_size,
    lane_for,
)
from lumiku_bgremover.settings import Limits

LIMITS = Limits(max_images=30, max_image_bytes=1000, max_batch_bytes=5000)
MISSING = SourceFailure(FailCode.SOURCE_NOT_FOUND, "no such object")


def batch(count: int, **image: object) -> BatchRequested:
    images = [{"filename": f"{i}.png", "ref": {"bucket": "bkt", "key": f"originals/u/{i}.png"},
               **image} for i in range(count)]  # fmt: skip
    body = {"request_id": "r", "user_id": "u", "tier": "standard", "images": images}
    return msgspec.convert(body, BatchRequested)


def single() -> ImageRequested:
    ref = {"bucket": "bkt", "key": "originals/u/a.png"}
    body = {"request_id": "s", "user_id": "u", "tier": "basic",
            "image": {"filename": "a.png", "ref": ref}}  # fmt: skip
    return msgspec.convert(body, ImageRequested)


@pytest.mark.parametrize(
    ("request_", "code", "path"),
    [
        (batch(31), RejectCode.TOO_MANY_IMAGES, "$.images"),
        (batch(2, size_bytes=1001), RejectCode.IMAGE_TOO_LARGE, "$.images[0].size_bytes"),
        (batch(6, size_bytes=999), RejectCode.BATCH_TOO_LARGE, "$.images"),
    ],
)
def test_what_the_request_says_wrong_refuses_it(request_, code, path) -> None:
    with pytest.raises(Rejection) as caught:
        check_request(request_, LIMITS)
    assert (caught.value.code, caught.value.path) == (code, path)


def test_a_request_within_the_limits_passes() -> None:
    check_request(batch(5, size_bytes=1000), LIMITS)


@pytest.mark.parametrize(
    ("size", "outcome"),
    [
        (None, None),
        (0, 0),
        (1000, 1000),
        (
            1001,
            SourceFailure(FailCode.SOURCE_TOO_LARGE, "the image is 1001 bytes; the limit is 1000"),
        ),
    ],
)
def test_judge_size(size, outcome) -> None:
    assert judge_size(size, LIMITS) == outcome


def test_failed_sources_are_left_out_of_the_price_and_the_discount_band() -> None:
    # 20 images would be 5 % off; with one missing, 19 are priced at no discount
    admitted = admit(batch(20), [100] * 19 + [MISSING], LIMITS)
    assert admitted.runnable == tuple(range(19))
    assert admitted.failures == {19: MISSING}
    assert (admitted.quote.count, admitted.quote.discount_pct, admitted.quote.total) == (19, 0, 152)


def test_no_runnable_image_refuses_the_request_and_says_why() -> None:
    with pytest.raises(Rejection) as caught:
        admit(batch(2), [MISSING, MISSING], LIMITS)
    assert (caught.value.code, caught.value.path) == (RejectCode.NO_RUNNABLE_IMAGES, "$.images")
    assert "$.images[1]: source_not_found (no such object)" in caught.value.message
    with pytest.raises(Rejection) as single_caught:
        admit(single(), [MISSING], LIMITS)
    assert single_caught.value.path == "$.image.ref"


def test_the_runnable_images_real_sizes_count_against_the_batch_limit() -> None:
    with pytest.raises(Rejection) as caught:
        admit(batch(6), [900] * 6, LIMITS)
    assert caught.value.code is RejectCode.BATCH_TOO_LARGE
    admit(batch(6), [900] * 5 + [MISSING], LIMITS)  # the failed one does not count


def test_lanes() -> None:
    assert lane_for(single(), LIMITS) is Lane.INTERACTIVE
    assert lane_for(batch(LIMITS.interactive_max_images), LIMITS) is Lane.INTERACTIVE
    assert lane_for(batch(LIMITS.interactive_max_images + 1), LIMITS) is Lane.BULK
