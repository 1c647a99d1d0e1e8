"""The keyed work queue: feeds, scheduler, dead letters; a Protocol with a JetStream and an
in-memory implementation."""

from lumiku_bgremover.queue.base import Delivery, Processor, WorkQueue
from lumiku_bgremover.queue.dead_letters import DeadLetterMover
from lumiku_bgremover.queue.jetstream import JetStreamWorkQueue
from lumiku_bgremover.queue.memory import InMemoryWorkQueue
from lumiku_bgremover.queue.runner import Feed, WorkQueueRunner, cancel_all, heartbeat
from lumiku_bgremover.queue.scheduling import LANE_ORDER, backoff_delay, partition_of, pick

__all__ = [
    "LANE_ORDER",
    "DeadLetterMover",
    "Delivery",
    "Feed",
    "InMemoryWorkQueue",
    "JetStreamWorkQueue",
    "Processor",
    "WorkQueue",
    "WorkQueueRunner",
    "backoff_delay",
    "cancel_all",
    "heartbeat",
    "partition_of",
    "pick",
]
