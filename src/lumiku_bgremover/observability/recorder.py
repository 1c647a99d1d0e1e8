"""What the pipeline records: a small Protocol the Prometheus `Metrics` implements, and an
in-memory double that keeps every recording for tests (no no-op: a test sees what moved).

The pipeline imports only this module, never `prometheus_client`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "NO_ENGINE",
    "InMemoryMetrics",
    "PipelineMetrics",
    "batch_seconds",
]

#: Outcomes of one image.
DONE: Final = "done"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
#: The engine label of an image that ended before any engine answered for it.
NO_ENGINE: Final = "none"


class PipelineMetrics(Protocol):
    """The pipeline's measurements: images, engine calls, credits and batch durations."""

    def item_finished(self, tier: str, engine: str, outcome: str, code: str = "") -> None:
        """One image reached `outcome` (done, failed with `code`, cancelled)."""

    def engine_call(self, engine: str, model: str, seconds: float) -> None:
        """One engine call took `seconds`."""

    def charged(self, tier: str, amount: int) -> None:
        """Credits charged for a new batch or single image."""

    def refunded(self, tier: str, amount: int) -> None:
        """Credits given back for failed or cancelled images."""

    def batch_finished(self, tier: str, seconds: float) -> None:
        """A batch became final `seconds` after it was accepted."""


def batch_seconds(created_at: datetime, completed_at: datetime | None) -> float | None:
    """Seconds from acceptance to completion; None while not completed (never negative)."""
    if completed_at is None:
        return None
    return max((completed_at - created_at).total_seconds(), 0.0)


@dataclass
class InMemoryMetrics:
    """Keeps every recording, in order, as tuples a test can compare."""

    items: list[tuple[str, str, str, str]] = field(default_factory=list)
    engine_calls: list[tuple[str, str, float]] = field(default_factory=list)
    charges: list[tuple[str, int]] = field(default_factory=list)
    refunds: list[tuple[str, int]] = field(default_factory=list)
    batches: list[tuple[str, float]] = field(default_factory=list)

    def item_finished(self, tier: str, engine: str, outcome: str, code: str = "") -> None:
        """Keep (tier, engine, outcome, code)."""
        self.items.append((tier, engine, outcome, code))

    def engine_call(self, engine: str, model: str, seconds: float) -> None:
        """Keep (engine, model, seconds)."""
        self.engine_calls.append((engine, model, seconds))

    def charged(self, tier: str, amount: int) -> None:
        """Keep (tier, amount)."""
        self.charges.append((tier, amount))

    def refunded(self, tier: str, amount: int) -> None:
        """Keep (tier, amount)."""
        self.refunds.append((tier, amount))

    def batch_finished(self, tier: str, seconds: float) -> None:
        """Keep (tier, seconds)."""
        self.batches.append((tier, seconds))
