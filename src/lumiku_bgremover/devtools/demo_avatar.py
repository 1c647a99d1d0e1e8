"""`demo --scenario avatar`: play Avatar Creator.

The demo publishes `avatar.project.completed` (a project of the sample photos, with a
`removal` block) exactly as Avatar Creator would, and shows each `item.done` arriving
with its avatar id and the project correlation.
"""

from __future__ import annotations

import json
import time
from typing import Any

from lumiku_bgremover.commands.common import say
from lumiku_bgremover.contracts import ImageInput, subjects
from lumiku_bgremover.contracts.common import App, Tier
from lumiku_bgremover.devtools.embedded.client import (
    AppClient,
    BatchEvent,
    BatchOutcome,
    BatchWatch,
)
from lumiku_bgremover.integrations.rules import request_id_for

__all__ = ["avatar_event", "run_avatar_project"]


def avatar_event(run_id: str, user_id: str, images: list[ImageInput], tier: Tier) -> dict[str, Any]:
    """The body Avatar Creator publishes for a finished project of `images`."""
    avatars = [
        {"avatar_id": f"av_{index:03d}", "filename": image.filename,
         "image": {"bucket": image.ref.bucket, "key": image.ref.key}}
        for index, image in enumerate(images)
    ]  # fmt: skip
    return {"event_id": f"demo-{run_id}", "user_id": user_id, "project_id": f"proj_{run_id}",
            "avatars": avatars, "removal": {"tier": tier.value}}  # fmt: skip


def show(event: BatchEvent) -> None:
    """One line per correlated result, as Avatar Creator would store it."""
    ref = getattr(event, "result", None)
    correlation = getattr(event, "correlation", None)
    if ref is None or correlation is None:
        return
    avatar = getattr(event, "source_id", None)
    say(f"  {correlation.app}/{correlation.ref} avatar {avatar}: {ref.bucket}/{ref.key}")


async def run_avatar_project(
    client: AppClient, event: dict[str, Any], *, timeout_s: float
) -> BatchOutcome:
    """Publish the project on `avatar.project.completed`; follow its batch to the end."""
    request_id = request_id_for(App.AVATAR_CREATOR, event["event_id"])
    watch = BatchWatch(request_id, show)
    client.watches.append(watch)
    prefix = client.settings.nats.subject_prefix
    started = time.perf_counter()
    try:
        await client.nc.jetstream().publish(
            subjects.with_prefix(prefix, subjects.AVATAR_PROJECT_COMPLETED),
            json.dumps(event).encode(),
            headers={"Nats-Msg-Id": event["event_id"]},
        )
        say(f"published project {event['project_id']} on avatar.project.completed "
            f"({len(event['avatars'])} avatars)")  # fmt: skip
        outcome = await watch.until_finished(timeout_s)
    finally:
        client.watches.remove(watch)
    outcome.wall_s = time.perf_counter() - started
    return outcome
