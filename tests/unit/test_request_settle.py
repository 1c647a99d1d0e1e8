from types import SimpleNamespace

import pytest
from faststream.exceptions import NackMessage

from lumiku_bgremover.handlers.requests import settle


def message(delivered: int) -> SimpleNamespace:
    metadata = SimpleNamespace(num_delivered=delivered)
    return SimpleNamespace(raw_message=SimpleNamespace(metadata=metadata, subject="x"))


async def broken() -> None:
    raise ConnectionError("database went away")


async def fine() -> None:
    return None


@pytest.mark.parametrize(("delivered", "delay"), [(1, 2.0), (3, 8.0), (20, 120.0)])
async def test_an_unexpected_failure_naks_with_a_growing_delay(
    delivered: int, delay: float
) -> None:
    with pytest.raises(NackMessage) as caught:
        await settle(broken(), message(delivered))  # type: ignore[arg-type]
    assert caught.value.extra_options == {"delay": delay}  # never an immediate redelivery


async def test_success_settles_quietly() -> None:
    await settle(fine(), message(1))  # type: ignore[arg-type]
