"""A missing app stream stops `run` and `provision` with a message naming what to set."""

import re
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from lumiku_bgremover.contracts.common import App
from lumiku_bgremover.integration_settings import IntegrationSettings
from lumiku_bgremover.provisioning import ProvisionError, bind_integrations
from lumiku_bgremover.settings import NatsSettings


class NoStreams:
    """The JetStream calls `bind_integrations` makes, on a server with no stream at all."""

    def __init__(self) -> None:
        self.consumers: list[str] = []

    async def stream_info(self, name: str) -> Any:
        raise NotFoundError

    async def add_consumer(self, stream: str, config: Any) -> None:
        self.consumers.append(stream)


@pytest.mark.parametrize(
    ("app", "stream", "variable"),
    [
        (App.AVATAR_CREATOR, "AVATARS", "AVATAR_CREATOR_STREAM"),
        (App.POSE_GENERATOR, None, "POSE_GENERATOR_STREAM"),
        (App.UPSCALER, None, "UPSCALER_STREAM"),
    ],
)
async def test_the_message_names_the_variables_to_set(
    app: App, stream: str | None, variable: str
) -> None:
    streams = {app: stream} if stream else {}
    integrations = IntegrationSettings(apps=frozenset({app}), provision_stream=False,
                                       streams=streams)  # fmt: skip
    js = NoStreams()
    with pytest.raises(ProvisionError) as failed:
        await bind_integrations(js, NatsSettings(stream_prefix="BG"), integrations)  # type: ignore[arg-type]
    message = str(failed.value)
    assert f"stream {stream or 'BG_INTEGRATIONS'} " in message
    named = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", message))
    assert {variable, "INTEGRATION_APPS", "INTEGRATIONS_PROVISION_STREAM"} <= named
    assert js.consumers == []


async def test_no_app_enabled_needs_no_stream() -> None:
    integrations = IntegrationSettings(apps=frozenset(), provision_stream=False)
    js = NoStreams()
    await bind_integrations(js, NatsSettings(), integrations)  # type: ignore[arg-type]
    assert js.consumers == []
