"""What the demo shows while a batch runs (a progress bar, a line per event) and the
summary it prints at the end."""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from types import TracebackType
from typing import TYPE_CHECKING, Self

from lumiku_bgremover.contracts import (
    BatchAccepted,
    BatchCompleted,
    BatchProgress,
    ItemDone,
    ItemFailed,
    RequestRejected,
)
from lumiku_bgremover.devtools.embedded.client import BatchEvent, BatchOutcome

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["BatchView", "event_line", "summary_lines"]


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.2f} s"


def event_line(event: BatchEvent) -> str | None:
    """One line about an event, or None for those shown by the bar alone (progress)."""
    line: str | None = None
    match event:
        case BatchAccepted():
            line = (
                f"accepted batch {event.batch_id}: {event.credits_charged} credits charged "
                f"({event.per_image} per image, {event.discount_pct}% discount), "
                f"{event.lane} lane"
            )
        case RequestRejected():
            line = f"rejected: {event.code}: {event.message}"
        case ItemDone():
            line = (
                f"  done    {event.filename}  {event.width}x{event.height}  "
                f"{_seconds(event.processing_ms)}  {event.engine} / {event.model}"
            )
        case ItemFailed():
            line = f"  failed  {event.filename}  {event.code}: {event.message}"
        case BatchCompleted():
            line = (
                f"completed batch {event.batch_id}: {event.status}, {event.succeeded} done, "
                f"{event.failed} failed, {event.cancelled} cancelled"
            )
    return line


class BatchView:
    """A progress bar over a batch's images, with a line per event above it.

    `rich` (the `embedded` extra) is imported here, so the service's own commands
    do not need it.
    """

    def __init__(self, total: int, console: Console | None = None) -> None:
        from rich.console import Console  # noqa: PLC0415 - optional: the demo only
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console or Console(highlight=False)
        self._progress = Progress(
            TextColumn("removing backgrounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._task = self._progress.add_task("batch", total=total)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def on_event(self, event: BatchEvent) -> None:
        """Print the event's line; an image done or failed moves the bar."""
        line = event_line(event)
        if line is not None:
            self._progress.console.print(line, markup=False, soft_wrap=True)
        if isinstance(event, ItemDone | ItemFailed):
            self._progress.advance(self._task)
        elif isinstance(event, BatchProgress):
            done = event.succeeded + event.failed + event.cancelled
            self._progress.update(self._task, completed=done)


def _timing(outcome: BatchOutcome) -> str:
    times = [d.processing_ms for d in outcome.done]
    if not times:
        return "per image: no image finished"
    engines = ", ".join(sorted({f"{d.engine} / {d.model}" for d in outcome.done}))
    return (
        f"per image: {_seconds(mean(times))} mean (min {_seconds(min(times))}, "
        f"max {_seconds(max(times))}) on {engines}"
    )


def summary_lines(outcome: BatchOutcome, balance: int, out: Path, page: Path) -> list[str]:
    """The closing summary: counts, credits, timing, and where the results are."""
    done = outcome.completed
    if done is None:
        return ["the batch did not complete"]
    paid = done.credits_charged - done.credits_refunded
    counts = f"{done.succeeded} of {done.total} done, {done.failed} failed"
    money = f"{done.credits_charged} charged, {done.credits_refunded} refunded, {paid} paid"
    lines = [
        f"batch {done.batch_id} {done.status}: {counts} in {outcome.wall_s:.1f} s",
        f"credits: {money}; balance {balance}",
        _timing(outcome),
        f"results in {out}:",
        f"  {page.name:<18} the before/after gallery",
        "  contact-sheet.png  every photo and its cut-out on one image",
    ]
    if done.archive is not None:
        lines.append(f"  cutouts.zip        the batch ZIP ({done.succeeded} PNG files)")
    lines += ["  cutouts/, masks/, originals/", f"open {page.as_uri()}"]
    return lines
