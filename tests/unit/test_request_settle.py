from types import SimpleNamespace

import pytest
from faststream.exceptions import NackMessage

from lumiku_bgremover.handlers.requests import OUTAGE_RETRY_S, settle


def message(delivered: int) -> SimpleNamespace:
    metadata = SimpleNamespace(num_delivered=delivered)
    return SimpleNamespace(raw_message=SimpleNamespace(metadata=metadata, subject="x"))


async def broken() -> None:
    raise RuntimeError("a bug")


async def outage() -> None:
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


@pytest.mark.parametrize("delivered", [1, 5, 50])
async def test_a_dependency_outage_naks_with_a_short_constant_delay(delivered: int) -> None:
    with pytest.raises(NackMessage) as caught:
        await settle(outage(), message(delivered))  # type: ignore[arg-type]
    assert caught.value.extra_options == {"delay": OUTAGE_RETRY_S}


async def test_success_settles_quietly() -> None:
    await settle(fine(), message(1))  # type: ignore[arg-type]
