"""JetStream streams (and the bucket) the service needs, created or updated idempotently.

FastStream's auto-declare is never used (NATS-NOTES.md, trap 4): stream settings
are ours to state here, and settings an operator tuned on a live stream (limits
such as `max_age` or `max_bytes`) are kept when the stream is updated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import BadRequestError, NotFoundError

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.integration_settings import Binding, IntegrationSettings
from lumiku_bgremover.settings import Limits, NatsSettings

DAY_S = 86_400.0
#: JetStream's error code for "stream name already in use with a different configuration".
STREAM_NAME_IN_USE = 10058
#: Fields this module owns on every stream; everything else stays as the server has it.
MANAGED_FIELDS = (
    "subjects",
    "description",
    "num_replicas",
    "duplicate_window",
    "subject_transform",
)
#: Fields a live stream cannot change: a difference needs a drain and a re-create.
FIXED_FIELDS = ("retention", "storage")


class ProvisionError(RuntimeError):
    """A live stream differs in a way that provisioning must not change by itself."""


class Action(StrEnum):
    """What provisioning did to one stream."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class StreamNames:
    """Stream names, derived from the configured prefix."""

    requests: str
    integrations: str
    work: str
    events: str
    dead_letters: str

    @classmethod
    def of(cls, settings: NatsSettings) -> StreamNames:
        """Names for a stream prefix such as `BGREMOVE`."""
        p = settings.stream_prefix
        return cls(
            f"{p}_REQUESTS", f"{p}_INTEGRATIONS", f"{p}_WORK", f"{p}_EVENTS", f"{p}_DEADLETTERS"
        )

    def work_consumer(self, lane: Lane, partition: int) -> str:
        """Durable name of one partition of one lane: `BGREMOVE_WORK_BULK_3`."""
        return f"{self.work}_{lane.value.upper()}_{partition}"

    def max_deliveries_subject(self) -> str:
        """The server's advisory when a work item runs out of deliveries."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.work}.*"


def work_transform(settings: NatsSettings, partitions: int) -> SubjectTransform:
    """`bgremove.work.<lane>.<user>` is stored as `bgremove.work.<lane>.<partition>.<user>`."""
    base = subjects.with_prefix(settings.subject_prefix, subjects.WORK_ROOT)
    return SubjectTransform(
        src=f"{base}.*.*",
        dest=f"{base}.{{{{wildcard(1)}}}}.{{{{partition({partitions},2)}}}}.{{{{wildcard(2)}}}}",
    )


def stream_configs(
    settings: NatsSettings, limits: Limits, *, with_integrations: bool = False
) -> list[StreamConfig]:
    """Every stream the service owns, as the code wants it; the integrations stream (for
    other apps' events) only `with_integrations` (development: in production those events
    live on the apps' own streams)."""
    names = StreamNames.of(settings)

    def stream(
        name: str, description: str, names_: tuple[str, ...], **extra: object
    ) -> StreamConfig:
        return StreamConfig(
            name=name,
            description=description,
            subjects=[subjects.with_prefix(settings.subject_prefix, s) for s in names_],
            storage=StorageType.FILE,
            num_replicas=settings.stream_replicas,
            duplicate_window=settings.duplicate_window_s,
            **extra,  # type: ignore[arg-type]
        )

    integrations = stream(
        names.integrations,
        "events of other Lumiku apps that start removals",
        subjects.INTEGRATION_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        max_age=7 * DAY_S,
    )
    return [
        stream(
            names.requests,
            "bgremove requests from Lumiku apps",
            subjects.REQUEST_SUBJECTS,
            retention=RetentionPolicy.LIMITS,
            max_age=7 * DAY_S,
        ),
        *([integrations] if with_integrations else []),
        stream(
            names.work,
            "per-image work items, partitioned by user",
            (f"{subjects.WORK_ROOT}.*.*",),
            retention=RetentionPolicy.WORK_QUEUE,
            subject_transform=work_transform(settings, limits.work_partitions),
        ),
        stream(
            names.events,
            "bgremove outbound events",
            subjects.EVENT_SUBJECTS,
            retention=RetentionPolicy.LIMITS,
            max_age=7 * DAY_S,
        ),
        dataclasses.replace(
            stream(
                names.dead_letters,
                "max-deliveries advisories of the work queue",
                (),
                retention=RetentionPolicy.WORK_QUEUE,
            ),
            subjects=[names.max_deliveries_subject()],
        ),
    ]


#: Seconds a delivered request may go unacknowledged before it is redelivered.
REQUEST_ACK_WAIT_S = 60.0


def work_consumer_configs(settings: NatsSettings, limits: Limits) -> list[ConsumerConfig]:
    """One durable pull consumer per lane and partition (filters never overlap)."""
    names = StreamNames.of(settings)
    return [
        ConsumerConfig(
            durable_name=names.work_consumer(lane, partition),
            filter_subject=subjects.work_filter(lane, partition, settings.subject_prefix),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=limits.work_ack_wait_s,
            max_deliver=limits.max_deliver,
            max_ack_pending=10_000,
        )
        for lane in Lane
        for partition in range(limits.work_partitions)
    ]


def request_consumer_configs(settings: NatsSettings) -> dict[str, ConsumerConfig]:
    """One durable pull consumer per request subject, by base subject; never gives up."""
    prefix = StreamNames.of(settings).requests
    names = {
        subjects.BATCH_REQUESTED: f"{prefix}_BATCH",
        subjects.IMAGE_REQUESTED: f"{prefix}_IMAGE",
        subjects.BATCH_CANCEL: f"{prefix}_CANCEL",
    }
    return {
        subject: ConsumerConfig(
            durable_name=durable,
            filter_subject=subjects.with_prefix(settings.subject_prefix, subject),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=REQUEST_ACK_WAIT_S,
            max_deliver=-1,
        )
        for subject, durable in names.items()
    }


def integration_consumer_config(settings: NatsSettings, binding: Binding) -> ConsumerConfig:
    """The durable consumer of one app's events on its stream; never gives up."""
    return ConsumerConfig(
        durable_name=binding.durable,
        filter_subject=subjects.with_prefix(settings.subject_prefix, binding.subject),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=REQUEST_ACK_WAIT_S,
        max_deliver=-1,
    )


def notifier_consumer_config(settings: NatsSettings) -> ConsumerConfig:
    """The `notifier` role's own durable consumer of `batch.completed` on the events stream."""
    return ConsumerConfig(
        durable_name=f"{StreamNames.of(settings).events}_NOTIFIER",
        filter_subject=subjects.with_prefix(settings.subject_prefix, subjects.BATCH_COMPLETED),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=REQUEST_ACK_WAIT_S,
        max_deliver=-1,
    )


def dead_letter_consumer_config(settings: NatsSettings) -> ConsumerConfig:
    """The durable consumer that turns max-deliveries advisories into failed items."""
    return ConsumerConfig(
        durable_name=f"{StreamNames.of(settings).dead_letters}_MOVER",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=REQUEST_ACK_WAIT_S,
        max_deliver=-1,
    )


def _managed(config: StreamConfig) -> dict[str, object]:
    values = {name: getattr(config, name) for name in MANAGED_FIELDS}
    values["subjects"] = sorted(config.subjects or [])
    values["duplicate_window"] = round(float(config.duplicate_window or 0.0), 3)
    return values


def merge(live: StreamConfig, wanted: StreamConfig) -> StreamConfig:
    """The live config with our managed fields applied; refuses unchangeable differences."""
    for name in FIXED_FIELDS:
        if getattr(live, name) != getattr(wanted, name):
            raise ProvisionError(
                f"stream {live.name}: {name} is {getattr(live, name)} but should be "
                f"{getattr(wanted, name)}; drain the stream and delete it to re-create it"
            )
    return dataclasses.replace(live, **{name: getattr(wanted, name) for name in MANAGED_FIELDS})


async def ensure_stream(js: JetStreamContext, wanted: StreamConfig) -> Action:
    """Create the stream, or update the fields we own; a no-op when nothing differs."""
    try:
        info = await js.stream_info(wanted.name or "")
    except NotFoundError:
        try:
            await js.add_stream(wanted)
        except BadRequestError as error:
            if error.err_code != STREAM_NAME_IN_USE:
                raise
            return await ensure_stream(js, wanted)  # another replica created it first
        return Action.CREATED
    if _managed(info.config) == _managed(wanted):
        merge(info.config, wanted)
        return Action.UNCHANGED
    await js.update_stream(merge(info.config, wanted))
    return Action.UPDATED


async def bind_integrations(
    js: JetStreamContext, settings: NatsSettings, integrations: IntegrationSettings
) -> None:
    """The durable consumer of each enabled app on its configured stream, which must exist."""
    for binding in integrations.bindings(settings.stream_prefix):
        try:
            await js.stream_info(binding.stream)
        except NotFoundError:
            raise ProvisionError(
                f"stream {binding.stream} for {binding.subject} does not exist: create it "
                f"(or name the app's own with {binding.app.value.upper().replace('-', '_')}"
                "_STREAM), leave the app out of INTEGRATION_APPS, or set "
                "INTEGRATIONS_PROVISION_STREAM=true (development only)"
            ) from None
        await js.add_consumer(binding.stream, integration_consumer_config(settings, binding))


def bound_consumers(
    settings: NatsSettings, limits: Limits, integrations: IntegrationSettings
) -> list[tuple[str, str]]:
    """(stream, durable) of every consumer `run` binds to (the notifier's aside)."""
    names = StreamNames.of(settings)
    work = [(names.work, c.durable_name or "") for c in work_consumer_configs(settings, limits)]
    dead = [(names.dead_letters, dead_letter_consumer_config(settings).durable_name or "")]
    requests = [(names.requests, c.durable_name or "")
                for c in request_consumer_configs(settings).values()]  # fmt: skip
    apps = [(b.stream, b.durable) for b in integrations.bindings(settings.stream_prefix)]
    return work + dead + requests + apps


async def check_provisioned(
    js: JetStreamContext, settings: NatsSettings, limits: Limits, integrations: IntegrationSettings
) -> int:
    """Every consumer `run` binds to exists (`PROVISION_ON_START=false`); how many."""
    consumers = bound_consumers(settings, limits, integrations)
    for stream, durable in consumers:
        try:
            await js.consumer_info(stream, durable)
        except NotFoundError:
            raise ProvisionError(
                f"consumer {durable} of stream {stream} does not exist: run "
                "`lumiku-bgremover provision` first (PROVISION_ON_START is off)"
            ) from None
    return len(consumers)


async def provision_streams(
    js: JetStreamContext,
    settings: NatsSettings,
    limits: Limits,
    integrations: IntegrationSettings | None = None,
) -> dict[str, Action]:
    """Ensure every stream and the work consumers; returns what happened to each stream.

    With `integrations`, also the apps' durable consumers (and our integrations stream
    when it says so).
    """
    with_stream = integrations is not None and integrations.provision_stream
    actions = {
        config.name or "": await ensure_stream(js, config)
        for config in stream_configs(settings, limits, with_integrations=with_stream)
    }
    names = StreamNames.of(settings)
    for consumer in work_consumer_configs(settings, limits):
        await js.add_consumer(names.work, consumer)  # create-or-update by durable name
    await js.add_consumer(names.dead_letters, dead_letter_consumer_config(settings))
    for consumer in request_consumer_configs(settings).values():
        await js.add_consumer(names.requests, consumer)
    await js.add_consumer(names.events, notifier_consumer_config(settings))
    if integrations is not None:
        await bind_integrations(js, settings, integrations)
    return actions
