"""Pure rules of the integrations: which events start removals and the requests they become."""

from typing import Any

import msgspec
import pytest

from lumiku_bgremover.contracts import (
    AvatarProjectCompleted,
    BatchRequested,
    ImageRequested,
    IntegrationSetting,
    PoseGenerated,
    UpscalerCompleted,
    UpscaleStep,
)
from lumiku_bgremover.contracts.common import App, Tier
from lumiku_bgremover.integrations import rules

REF = {"bucket": "lumiku-avatar", "key": "p/1.png"}


def avatar(**extra: Any) -> AvatarProjectCompleted:
    body = {"event_id": "e1", "user_id": "u1", "project_id": "p1",
            "avatars": [{"avatar_id": "a1", "image": REF}], "new_field": 1, **extra}  # fmt: skip
    return msgspec.convert(body, AvatarProjectCompleted)


ON = IntegrationSetting(app=App.AVATAR_CREATOR, enabled=True, tier=Tier.BASIC)
OFF = IntegrationSetting(app=App.AVATAR_CREATOR, enabled=False)


@pytest.mark.parametrize(
    ("extra", "setting", "tier"),
    [
        ({"removal": {"tier": "industry"}}, OFF, Tier.INDUSTRY),  # the event asks: it wins
        ({"removal": {}}, None, Tier.STANDARD),
        ({}, ON, Tier.BASIC),  # the setting decides
        ({}, OFF, rules.SkipCode.SETTING_OFF),
        ({}, None, rules.SkipCode.SETTING_OFF),
        ({"avatars": [], "removal": {}}, ON, rules.SkipCode.EMPTY_PROJECT),
    ],
)
def test_when_an_avatar_project_starts_a_batch(
    extra: dict[str, Any], setting: IntegrationSetting | None, tier: Tier | rules.SkipCode
) -> None:
    found = rules.avatar_request(avatar(**extra), setting)
    if isinstance(tier, rules.SkipCode):
        assert isinstance(found, rules.Skip)
        assert found.code is tier
        return
    assert isinstance(found, BatchRequested)
    assert found.tier is tier
    assert found.request_id == "avatar-creator:e1"
    assert [(i.source_id, i.filename) for i in found.images] == [("a1", "avatar-000.png")]
    assert (found.correlation and found.correlation.ref) == "p1"


def test_a_long_event_id_still_gives_a_valid_stable_request_id() -> None:
    long_id = "e" * 128
    first = rules.request_id_for(App.POSE_GENERATOR, long_id)
    assert first == rules.request_id_for(App.POSE_GENERATOR, long_id)
    assert len(first) <= rules.MAX_IDENT
    assert first != rules.request_id_for(App.UPSCALER, long_id)


def test_a_pose_correlates_by_generation_and_carries_the_next_step() -> None:
    event = msgspec.convert({"event_id": "e", "user_id": "u", "pose_id": "p", "image": REF,
                             "generation_id": "g"}, PoseGenerated)  # fmt: skip
    setting = IntegrationSetting(app=App.POSE_GENERATOR, enabled=True,
                                 then_upscale=UpscaleStep(scale=4))  # fmt: skip
    found = rules.pose_request(event, setting)
    assert isinstance(found, ImageRequested)
    assert found.correlation is not None
    assert found.correlation.ref == "g"
    assert found.then_upscale == UpscaleStep(scale=4)


@pytest.mark.parametrize(
    ("then", "enabled", "skipped"),
    [
        ({"service": "bgremove"}, False, None),
        ({"service": "captioner"}, True, rules.SkipCode.NOT_ADDRESSED_TO_US),  # not ours
        (None, True, None),
        (None, False, rules.SkipCode.SETTING_OFF),
    ],
)
def test_upscale_then_remove(
    then: dict[str, str] | None, enabled: bool, skipped: rules.SkipCode | None
) -> None:
    event = msgspec.convert({"event_id": "e", "user_id": "u", "job_id": "j", "result": REF,
                             "then": then}, UpscalerCompleted)  # fmt: skip
    setting = IntegrationSetting(app=App.UPSCALER, enabled=enabled,
                                 then_upscale=UpscaleStep(scale=2))  # fmt: skip
    found = rules.upscaled_request(event, setting)
    assert isinstance(found, ImageRequested) is (skipped is None)
    if isinstance(found, rules.Skip):
        assert found.code is skipped
    if isinstance(found, ImageRequested):
        assert found.then_upscale is None  # never loops back to the Upscaler
