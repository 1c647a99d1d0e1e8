"""The fake engine: deterministic mattes, deterministic failures, injected delay."""

from __future__ import annotations

import random

import pytest
from PIL import Image, ImageDraw

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engines import Engine, EngineError, FakeEngine
from lumiku_bgremover.engines.fake import border_colour, fake_matte


def square_on_white(size: tuple[int, int] = (120, 80)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    w, h = size
    ImageDraw.Draw(image).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(200, 20, 20))
    return image


def noise(index: int, size: tuple[int, int] = (16, 12)) -> Image.Image:
    data = random.Random(index).randbytes(size[0] * size[1] * 3)
    return Image.frombytes("RGB", size, data)


def test_is_an_engine() -> None:
    engine = FakeEngine()
    assert isinstance(engine, Engine)
    assert engine.name == "fake"


async def test_same_image_gives_identical_matte_bytes() -> None:
    first = await FakeEngine().matte(square_on_white(), model="any")
    second = await FakeEngine(seed=7).matte(square_on_white(), model="other")
    assert first.tobytes() == second.tobytes()


async def test_different_images_give_different_mattes() -> None:
    engine = FakeEngine()
    small = await engine.matte(square_on_white(), model="m")
    other = square_on_white()
    ImageDraw.Draw(other).ellipse((5, 5, 30, 30), fill=(0, 0, 255))
    changed = await engine.matte(other, model="m")
    assert small.tobytes() != changed.tobytes()


async def test_matte_separates_subject_from_border_colour() -> None:
    matte = await FakeEngine().matte(square_on_white((120, 80)), model="m")
    assert matte.getpixel((60, 40)) == 255  # inside the red square
    assert matte.getpixel((2, 2)) == 0  # the white border colour
    assert matte.getpixel((115, 75)) == 0


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (640, 480), (333, 1001)])
async def test_matte_keeps_the_input_size_and_is_mode_l(size: tuple[int, int]) -> None:
    matte = await FakeEngine().matte(noise(1, size), model="m")
    assert matte.mode == "L"
    assert matte.size == size


async def test_non_rgb_input_is_converted() -> None:
    rgba = square_on_white().convert("RGBA")
    matte = await FakeEngine().matte(rgba, model="m")
    assert matte.tobytes() == fake_matte(square_on_white()).tobytes()


def test_border_colour_is_the_mean_of_the_edge() -> None:
    image = Image.new("RGB", (10, 10), (10, 20, 30))
    image.putpixel((5, 5), (255, 255, 255))  # interior: ignored
    assert border_colour(image) == (10, 20, 30)


async def test_failure_rate_is_close_to_configured_and_deterministic() -> None:
    images = [noise(i) for i in range(200)]
    engine = FakeEngine(failure_rate=0.25, seed=3)
    failed: set[int] = set()
    errors: list[EngineError] = []
    for index, image in enumerate(images):
        try:
            await engine.matte(image, model="m")
        except EngineError as error:
            errors.append(error)
            failed.add(index)
    assert {(e.code, e.retryable) for e in errors} == {(FailCode.ENGINE_FAILED, True)}
    # Binomial(200, 0.25): mean 50, sd ~6.1; 30..70 is beyond 3 sd either way.
    assert 30 <= len(failed) <= 70
    again = FakeEngine(failure_rate=0.25, seed=3)
    assert {i for i, image in enumerate(images) if again.fails(image)} == failed
    other_seed = FakeEngine(failure_rate=0.25, seed=4)
    assert {i for i, image in enumerate(images) if other_seed.fails(image)} != failed


async def test_failure_retryable_is_configurable() -> None:
    engine = FakeEngine(failure_rate=1.0, retryable=False)
    with pytest.raises(EngineError) as caught:
        await engine.matte(noise(0), model="m")
    assert caught.value.retryable is False


def test_rates_zero_and_one() -> None:
    images = [noise(i) for i in range(50)]
    assert not any(FakeEngine(failure_rate=0.0).fails(image) for image in images)
    assert all(FakeEngine(failure_rate=1.0).fails(image) for image in images)


async def test_delay_uses_the_injected_sleep() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    await FakeEngine(delay_s=2.5, sleep=sleep).matte(noise(0), model="m")
    assert slept == [2.5]
    await FakeEngine(delay_s=0.0, sleep=sleep).matte(noise(0), model="m")
    assert slept == [2.5]


async def test_delay_happens_before_a_failure() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(EngineError):
        await FakeEngine(delay_s=1.0, failure_rate=1.0, sleep=sleep).matte(noise(0), model="m")
    assert slept == [1.0]


@pytest.mark.parametrize(
    "kwargs", [{"delay_s": -1.0}, {"failure_rate": -0.1}, {"failure_rate": 1.5}]
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        FakeEngine(**kwargs)  # type: ignore[arg-type]
