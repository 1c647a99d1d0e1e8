"""The embedded mode's pure parts: following a batch's events, the demo's lines and
photos, the environment `dev up` prints, and stopping on signals."""

import asyncio
import os
import shlex
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from lumiku_bgremover.contracts import (
    BatchAccepted,
    BatchCompleted,
    BatchProgress,
    BatchStatus,
    ItemDone,
    ItemFailed,
    ObjectRef,
    PricingType,
    RejectCode,
    RequestMode,
    RequestRejected,
    Tier,
)
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.devtools.demo import find_photos
from lumiku_bgremover.devtools.demo_view import event_line, summary_lines
from lumiku_bgremover.devtools.embedded import (
    Interrupted,
    environment,
    export_lines,
    stop_on_signals,
)
from lumiku_bgremover.devtools.embedded.client import BatchEvent, BatchWatch
from lumiku_bgremover.settings import (
    DatabaseSettings,
    NatsSettings,
    Route,
    Settings,
    StorageSettings,
)

NOW = datetime(2025, 1, 31, 8, 15, tzinfo=UTC)
REF = ObjectRef(bucket="lumiku-bgremover", key="results/u/b_1/b_1:0.png")


def accepted(request_id: str = "r1", batch_id: str = "b_1") -> BatchAccepted:
    return BatchAccepted(
        request_id=request_id, batch_id=batch_id, user_id="u", tier=Tier.STANDARD,
        mode=RequestMode.BATCH, count=2, priced_count=2, pricing_type=PricingType.CREDITS,
        credits_charged=16, discount_pct=0, per_image="8", lane=Lane.INTERACTIVE, accepted_at=NOW,
    )  # fmt: skip


def done(index: int, batch_id: str = "b_1", ms: int = 1200) -> ItemDone:
    return ItemDone(
        batch_id=batch_id, item_id=f"{batch_id}:{index}", user_id="u", index=index,
        filename=f"p{index}.png", result=REF, url="file:///tmp/x.png", url_expires_at=None,
        content_type="image/png", size_bytes=10, width=64, height=48, engine="local",
        model="isnet-medium", processing_ms=ms, completed_at=NOW,
    )  # fmt: skip


def failed(index: int) -> ItemFailed:
    return ItemFailed(
        batch_id="b_1", item_id=f"b_1:{index}", user_id="u", index=index, filename="bad.png",
        code=FailCode.DECODE_FAILED, message="not an image", credits_refunded=0, failed_at=NOW,
    )  # fmt: skip


def completed(request_id: str = "r1", *, archive: bool = True) -> BatchCompleted:
    return BatchCompleted(
        batch_id="b_1", request_id=request_id, user_id="u", tier=Tier.STANDARD,
        mode=RequestMode.BATCH, status=BatchStatus.PARTIAL, total=2, succeeded=1, failed=1,
        cancelled=0, archive=REF if archive else None, credits_charged=16, credits_refunded=8,
        completed_at=NOW,
    )  # fmt: skip


def test_a_watch_keeps_only_its_own_request_and_batch() -> None:
    seen: list[BatchEvent] = []
    watch = BatchWatch("r1", seen.append)
    early = done(0)
    watch.add(early)  # before the acceptance: held back, not yet shown
    assert seen == []
    watch.add(accepted("other", "b_2"))
    watch.add(accepted())
    watch.add(done(1, batch_id="b_2"))
    watch.add(failed(1))
    watch.add(completed("other"))
    assert not watch.outcome.finished
    watch.add(completed())
    out = watch.outcome
    assert out.finished
    assert out.accepted == accepted()
    assert out.done == [early]
    assert [f.index for f in out.failed] == [1]
    assert out.completed == completed()
    assert seen == [accepted(), early, failed(1), completed()]


def test_a_rejection_finishes_the_watch() -> None:
    watch = BatchWatch("r1")
    rejected = RequestRejected(
        request_id="r1", user_id="u", code=RejectCode.INSUFFICIENT_CREDITS, message="poor",
        rejected_at=NOW,
    )  # fmt: skip
    watch.add(rejected)
    assert watch.outcome.finished
    assert watch.outcome.rejected == rejected
    assert event_line(rejected) == "rejected: insufficient_credits: poor"


async def test_until_finished_wakes_on_completion_and_times_out() -> None:
    watch = BatchWatch("r1")
    waiting = asyncio.create_task(watch.until_finished(5))
    await asyncio.sleep(0)
    watch.add(accepted())
    watch.add(completed())
    assert (await waiting).completed is not None
    with pytest.raises(TimeoutError):
        await BatchWatch("r2").until_finished(0.05)


def test_event_lines() -> None:
    assert event_line(accepted()) == (
        "accepted batch b_1: 16 credits charged (8 per image, 0% discount), interactive lane"
    )
    assert event_line(done(0)) == "  done    p0.png  64x48  1.20 s  local / isnet-medium"
    assert event_line(failed(1)) == "  failed  bad.png  decode_failed: not an image"
    progress = BatchProgress(
        batch_id="b_1", user_id="u", total=2, succeeded=1, failed=0, cancelled=0, updated_at=NOW
    )
    assert event_line(progress) is None


def test_summary_lines(tmp_path: Path) -> None:
    watch = BatchWatch("r1")
    for event in (accepted(), done(0, ms=1000), done(1, ms=3000), completed()):
        watch.add(event)
    watch.outcome.wall_s = 4.44
    page = tmp_path / "index.html"
    lines = summary_lines(watch.outcome, 992, tmp_path, page)
    assert lines[0] == "batch b_1 partial: 1 of 2 done, 1 failed in 4.4 s"
    assert lines[1] == "credits: 16 charged, 8 refunded, 8 paid; balance 992"
    assert lines[2] == "per image: 2.00 s mean (min 1.00 s, max 3.00 s) on local / isnet-medium"
    assert any("cutouts.zip" in line for line in lines)
    assert lines[-1] == f"open {page.as_uri()}"
    watch2 = BatchWatch("r1")
    watch2.add(completed(archive=False))
    assert not any(
        "cutouts.zip" in line for line in summary_lines(watch2.outcome, 0, tmp_path, page)
    )


def test_find_photos_skips_other_files_and_large_ones(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "b.PNG")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    (tmp_path / "big.webp").write_bytes(b"x" * 5000)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder.png").mkdir()
    photos, skipped = find_photos(tmp_path, max_bytes=4000)
    assert [(p.path.name, p.content_type) for p in photos] == [
        ("a.jpg", "image/jpeg"),
        ("b.PNG", "image/png"),
    ]
    assert skipped == [
        "big.webp: 5000 bytes, over 4000",
        "notes.txt: not a .jpg, .jpeg, .png or .webp file",
    ]


def test_environment_points_every_command_at_the_stack(tmp_path: Path) -> None:
    settings = Settings(
        nats=NatsSettings(servers=("nats://127.0.0.1:4333",)),
        database=DatabaseSettings(url="postgresql://postgres:@/postgres?host=/tmp/a b"),
        storage=StorageSettings(backend="local", local_dir=tmp_path),
    )
    settings.engines.routes.update(
        {tier: Route(engine="fake", model="fake-matte") for tier in Tier}
    )
    env = environment(settings)
    assert env == {
        "NATS_URL": "nats://127.0.0.1:4333",
        "DATABASE_URL": "postgresql://postgres:@/postgres?host=/tmp/a b",
        "INTEGRATIONS_PROVISION_STREAM": "true",
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_DIR": str(tmp_path),
        "TIER_ROUTING": "basic=fake:fake-matte,standard=fake:fake-matte,"
        "professional=fake:fake-matte,industry=fake:fake-matte",
    }
    assert Settings.from_env(env).engines.routes == settings.engines.routes
    lines = export_lines(env)
    assert lines[1] == "export DATABASE_URL='postgresql://postgres:@/postgres?host=/tmp/a b'"
    parsed = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines)
    assert parsed == env


async def interrupted_work(cleaned: list[str]) -> None:
    async with stop_on_signals():
        try:
            asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
            await asyncio.sleep(10)
        finally:
            cleaned.append("yes")


async def test_a_signal_cancels_the_work_and_leaves_as_interrupted() -> None:
    cleaned: list[str] = []
    with pytest.raises(Interrupted) as caught:
        await interrupted_work(cleaned)
    assert cleaned == ["yes"]
    assert caught.value.signum == signal.SIGTERM
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_waiting_command_wakes_on_a_signal_without_cancellation() -> None:
    async with stop_on_signals(cancel=False) as watch:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(watch.wait().wait(), 5)
    assert watch.received == signal.SIGHUP
