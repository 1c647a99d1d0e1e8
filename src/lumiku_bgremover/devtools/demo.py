"""`lumiku-bgremover demo [PHOTO_DIR]`: a real batch through the real code, on this machine.

Starts the embedded stack (private nats-server and PostgreSQL, local object store),
grants a demo user credits, runs the service in this process with the local IS-Net
model, then acts as a client app would: uploads the photos, asks for a quote,
publishes a batch request and follows its events with a progress bar. It writes the
cut-outs, the batch ZIP, a before/after gallery and a contact sheet to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from lumiku_bgremover.commands.common import EXIT_FAILED, EXIT_OK, error_text, say, shout
from lumiku_bgremover.commands.quote import NoService, format_quote, request_quote
from lumiku_bgremover.contracts import (
    BatchRequested,
    Correlation,
    ErrorReply,
    ImageInput,
    QuoteRequest,
    RequestMode,
    Tier,
)
from lumiku_bgremover.devtools.demo_avatar import avatar_event, run_avatar_project
from lumiku_bgremover.devtools.demo_view import BatchView, summary_lines
from lumiku_bgremover.devtools.dev import line_buffered_stdout
from lumiku_bgremover.devtools.embedded import (
    EmbeddedError,
    EmbeddedStack,
    Interrupted,
    embedded_stack,
    routes_to,
    stack_settings,
    stop_on_signals,
    workspace,
)
from lumiku_bgremover.devtools.embedded.client import AppClient, BatchOutcome, app_client
from lumiku_bgremover.devtools.embedded.service import in_process_service
from lumiku_bgremover.devtools.gallery import GallerySummary, Shot, write_gallery
from lumiku_bgremover.engine_settings import DEFAULT_ROUTES
from lumiku_bgremover.engines.base import EngineError
from lumiku_bgremover.engines.fakes.scenario import HostedFakes, hosted_fakes
from lumiku_bgremover.settings import Settings
from lumiku_bgremover.storage import zip_names

__all__ = ["DEMO_USER", "Photo", "add_arguments", "find_photos", "run", "sample_photos"]

#: The user the demo acts as.
DEMO_USER: Final = "demo-user"
#: File types the demo uploads, by extension.
IMAGE_TYPES: Final = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
#: scikit-image's sample photos the demo uses without a PHOTO_DIR: (file, loader).
SAMPLES: Final = (
    ("astronaut.png", "astronaut"),
    ("coffee.png", "coffee"),
    ("chelsea.png", "chelsea"),
    ("rocket.jpg", "rocket"),
    ("motorcycle.png", "stereo_motorcycle"),
)
ENGINES: Final = {"local": "isnet-medium", "fake": "fake-matte", "hosted-fake": "(routes)"}
DEFAULT_OUT: Final = Path("demo-output")
ARCHIVE_NAME: Final = "cutouts.zip"
_UNSAFE_KEY_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]+")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`[PHOTO_DIR]`, `--workdir`, `--out`, `--tier`, `--engine`, `--model`, `--timeout`."""
    add = parser.add_argument
    add(
        "photo_dir",
        metavar="PHOTO_DIR",
        nargs="?",
        type=Path,
        default=None,
        help="folder of .jpg/.png/.webp photos (default: scikit-image's sample photos)",
    )
    add(
        "--workdir",
        type=Path,
        default=None,
        help="keep the servers' data here (default: a temporary folder)",
    )
    add(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"where results and the gallery go (default: ./{DEFAULT_OUT})",
    )
    add("--tier", choices=[t.value for t in Tier], default=Tier.STANDARD.value)
    add(
        "--engine",
        choices=sorted(ENGINES),
        default="local",
        help="local: the IS-Net ONNX model (real); fake: a quick stand-in; hosted-fake: "
        "fake Hugging Face and Segmind servers with scripted faults (retries, breaker)",
    )
    add("--model", default=None, help="model of the local engine (isnet-medium, isnet-small)")
    add("--timeout", type=float, default=900.0, help="seconds to wait for the batch")
    add(
        "--scenario",
        choices=["batch", "avatar"],
        default="batch",
        help="batch: a web batch request; avatar: play Avatar Creator (a project event)",
    )
    add("--verbose", action="store_true", help="show the service's log")


@dataclass(frozen=True, slots=True)
class Photo:
    """A photo to upload."""

    path: Path
    content_type: str


def find_photos(folder: Path, max_bytes: int) -> tuple[list[Photo], list[str]]:
    """The photos in `folder` (sorted by name, not recursive) and why others were skipped."""
    photos: list[Photo] = []
    skipped: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        kind = IMAGE_TYPES.get(path.suffix.lower())
        if kind is None:
            skipped.append(f"{path.name}: not a .jpg, .jpeg, .png or .webp file")
        elif path.stat().st_size > max_bytes:
            skipped.append(f"{path.name}: {path.stat().st_size} bytes, over {max_bytes}")
        else:
            photos.append(Photo(path, kind))
    return photos, skipped


def sample_photos(folder: Path) -> list[Photo]:
    """scikit-image's sample photos, written to `folder` as PNG and JPEG files."""
    try:
        from skimage import data  # noqa: PLC0415 - optional (the dev extra), heavy
    except ImportError as error:
        raise EmbeddedError(
            "the sample photos come from scikit-image: install it (pip install scikit-image) "
            "or give a folder of photos: lumiku-bgremover demo PHOTO_DIR"
        ) from error
    from PIL import Image  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for name, loader in SAMPLES:
        pixels = getattr(data, loader)()
        array = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo: (left, right, disp)
        path = folder / name
        Image.fromarray(array).convert("RGB").save(path, quality=92)
        photos.append(Photo(path, IMAGE_TYPES[path.suffix]))
    return photos


def _object_key(run_id: str, index: int, name: str) -> str:
    safe = _UNSAFE_KEY_CHARS.sub("_", name).strip("._") or "image"
    return f"originals/{DEMO_USER}/{run_id}/{index:03d}-{safe}"


async def _upload(client: AppClient, run_id: str, photos: Sequence[Photo]) -> list[ImageInput]:
    images = []
    for index, photo in enumerate(photos):
        data = await asyncio.to_thread(photo.path.read_bytes)
        key = _object_key(run_id, index, photo.path.name)
        ref = await client.upload(key, data, photo.content_type)
        images.append(ImageInput(filename=photo.path.name, ref=ref, size_bytes=len(data)))
    return images


async def _quote(settings: Settings, tier: Tier, count: int) -> bool:
    request = QuoteRequest(user_id=DEMO_USER, tier=tier, count=count, mode=RequestMode.BATCH)
    reply = await request_quote(settings.nats, request)
    if isinstance(reply, ErrorReply):
        shout(f"quote refused: {error_text(reply)}")
        return False
    say(format_quote(DEMO_USER, reply))
    return reply.accepted


@dataclass(frozen=True, slots=True)
class DemoRun:
    """What one demo run asks for."""

    settings: Settings
    photos: list[Photo]
    tier: Tier
    run_id: str
    timeout_s: float
    scenario: str = "batch"

    @property
    def request_id(self) -> str:
        """The batch request's id (its idempotency key)."""
        return f"demo:{self.run_id}"


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What came back: the events, the result bytes by item index, the ZIP, the balance."""

    outcome: BatchOutcome
    cutouts: dict[int, bytes]
    archive: bytes | None
    balance: int


async def _fetch_results(client: AppClient, outcome: BatchOutcome) -> DemoResult:
    cutouts = {d.index: await client.fetch(d.result.bucket, d.result.key) for d in outcome.done}
    archive = None
    completed = outcome.completed
    if completed is not None and completed.archive is not None:
        archive = await client.fetch(completed.archive.bucket, completed.archive.key)
    balance = await client.balance(DEMO_USER)
    return DemoResult(outcome, cutouts, archive, balance)


async def _client_session(run: DemoRun) -> DemoResult | None:
    """Grant, upload, quote, publish, follow, fetch; None when the quote refused."""
    async with app_client(run.settings) as client:
        amount = max(1000, 25 * len(run.photos))
        balance = await client.grant(DEMO_USER, amount, key=f"demo-grant:{run.run_id}")
        say(f"granted {amount} credits to {DEMO_USER} (balance {balance})")
        images = await _upload(client, run.run_id, run.photos)
        say(f"uploaded {len(images)} photos to {client.store.bucket}/originals/{DEMO_USER}/")
        if not await _quote(run.settings, run.tier, len(images)):
            return None
        if run.scenario == "avatar":
            event = avatar_event(run.run_id, DEMO_USER, images, run.tier)
            outcome = await run_avatar_project(client, event, timeout_s=run.timeout_s)
            return await _fetch_results(client, outcome)
        request = BatchRequested(
            request_id=run.request_id, user_id=DEMO_USER, tier=run.tier, images=tuple(images),
            correlation=Correlation(app="demo", ref=run.run_id),
        )  # fmt: skip
        say(f"published {request.request_id} on bgremove.batch.requested")
        with BatchView(len(images)) as view:
            outcome = await client.run_batch(
                request, timeout_s=run.timeout_s, on_event=view.on_event
            )
        return await _fetch_results(client, outcome)


def _shots(run: DemoRun, result: DemoResult, originals: Sequence[bytes]) -> list[Shot]:
    names = zip_names([p.path.name for p in run.photos], "png")
    done = {d.index: d for d in result.outcome.done}
    failed = {f.index: f for f in result.outcome.failed}
    shots = []
    for index, photo in enumerate(run.photos):
        item, miss = done.get(index), failed.get(index)
        shot = Shot(
            name=photo.path.name,
            original=originals[index],
            result_name=names[index],
            cutout=result.cutouts.get(index),
            processing_ms=item.processing_ms if item else None,
            engine=item.engine if item else None,
            model=item.model if item else None,
            error=f"{miss.code}: {miss.message}" if miss else None,
        )
        shots.append(shot)
    return shots


def write_outputs(out: Path, run: DemoRun, result: DemoResult) -> Path:
    """The ZIP, cut-outs, masks, originals, contact sheet and gallery under `out`;
    the path of the gallery page."""
    outcome = result.outcome
    completed = outcome.completed
    assert completed is not None
    out.mkdir(parents=True, exist_ok=True)
    if result.archive is not None:
        (out / ARCHIVE_NAME).write_bytes(result.archive)
    engines = sorted({f"{d.engine} / {d.model}" for d in outcome.done}) or ["n/a"]
    summary = GallerySummary(
        batch_id=completed.batch_id, tier=str(completed.tier), engine=", ".join(engines),
        images=completed.total, succeeded=completed.succeeded, failed=completed.failed,
        credits_charged=completed.credits_charged, credits_refunded=completed.credits_refunded,
        wall_s=outcome.wall_s, archive=ARCHIVE_NAME if result.archive is not None else None,
        contact_sheet="contact-sheet.png",
        generated_at=datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    )  # fmt: skip
    originals = [p.path.read_bytes() for p in run.photos]
    title = f"lumiku-bgremover demo - {completed.batch_id} - {completed.tier}"
    return write_gallery(out, summary, _shots(run, result, originals), title=title)


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def _quiet_logs(*, verbose: bool) -> None:
    """Warnings only (everything with --verbose): the progress bar does the talking.

    FastStream's access log ("Received", "Processed") has its own handler on stdout and
    sets its own level when the broker starts, so it gets a filter instead.
    """
    if verbose:
        return
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
    for name in ("faststream", "faststream.access.nats"):
        logging.getLogger(name).addFilter(_warnings_only)


def _photos(args: argparse.Namespace, workdir: Path, max_bytes: int) -> list[Photo]:
    if args.photo_dir is None:
        photos = sample_photos(workdir / "samples")
        say(f"photos: {len(photos)} scikit-image samples ({', '.join(n for n, _ in SAMPLES)})")
        return photos
    if not args.photo_dir.is_dir():
        raise EmbeddedError(f"{args.photo_dir} is not a folder")
    photos, skipped = find_photos(args.photo_dir, max_bytes)
    for reason in skipped:
        say(f"skipped {reason}")
    if not photos:
        raise EmbeddedError(f"no .jpg, .jpeg, .png or .webp photos in {args.photo_dir}")
    say(f"photos: {len(photos)} from {args.photo_dir}")
    return photos


def _announce(stack: EmbeddedStack, settings: Settings) -> None:
    say(f"workdir {stack.workdir}")
    say(f"nats-server {stack.nats_url} (pid {stack.nats.pid})")
    say(f"postgres {stack.postgres.data_dir} (pid {stack.postgres.pid})")
    store = settings.storage
    where = store.local_dir if store.backend == "local" else store.s3.endpoint if store.s3 else "?"
    say(f"object store {store.backend}: {where}")
    route = settings.engines.routes[Tier.STANDARD]
    cached = settings.engines.model_cache_dir / f"{route.model}.onnx"
    note = ""
    if route.engine == "local":
        fetching = " (first run: fetching the weights with npm, about 90 MB)"
        note = f" (weights {cached})" if cached.is_file() else fetching
    if settings.engines.fallbacks:  # hosted-fake: the production routes
        for tier, tier_route in settings.engines.routes.items():
            backup = settings.engines.fallbacks[tier]
            say(f"tier {tier.value}: {tier_route.engine} / {tier_route.model}, "
                f"fallback {backup.engine} / {backup.model}")  # fmt: skip
        return
    say(f"engine {route.engine} / {route.model} for every tier{note}")


def _finished(result: DemoResult | None) -> bool:
    """Whether the batch completed (a rejection was printed as it came)."""
    return result is not None and result.outcome.completed is not None


def _report(out: Path, run: DemoRun, result: DemoResult) -> None:
    page = write_outputs(out, run, result)
    for line in summary_lines(result.outcome, result.balance, out, page):
        say(line)


def _engine_settings(
    stack: EmbeddedStack, settings: Settings, args: argparse.Namespace, fakes: HostedFakes | None
) -> Settings:
    """The stack's settings with every tier on one engine, or the hosted fakes' routing."""
    if fakes is None:
        model = args.model or ENGINES[args.engine]
        return stack_settings(stack, settings, routes_to(args.engine, model))
    demo = stack_settings(stack, settings, DEFAULT_ROUTES)
    say(f"fake Hugging Face at {fakes.huggingface.url}, fake Segmind at {fakes.segmind.url}")
    for line in fakes.script(Tier(args.tier)):
        say(line)
    return replace(demo, engines=fakes.settings(demo.engines))


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as servers:
        fakes = servers.enter_context(hosted_fakes()) if args.engine == "hosted-fake" else None
        code = await _demo_on(settings, args, fakes)
        for line in fakes.summary() if fakes else []:
            say(line)
        return code


async def _demo_on(settings: Settings, args: argparse.Namespace, fakes: HostedFakes | None) -> int:
    run_id = uuid.uuid4().hex[:12]
    with workspace(args.workdir, prefix="lumiku-demo-") as workdir:
        photos = _photos(args, workdir, settings.limits.max_image_bytes)
        async with embedded_stack(workdir) as stack:
            demo = _engine_settings(stack, settings, args, fakes)
            _announce(stack, demo)
            photos = photos[: demo.limits.max_images]
            run = DemoRun(demo, photos, Tier(args.tier), run_id, args.timeout, args.scenario)
            async with in_process_service(demo):
                say("service ready (in this process)")
                result = await _client_session(run)
                if _finished(result):
                    assert result is not None
                    await asyncio.to_thread(_report, args.out.resolve(), run, result)
                say("stopping the service and the servers")
    say("stopped: nothing left running")
    return EXIT_OK if _finished(result) else EXIT_FAILED


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the demo; 0 once the batch completed and the gallery is written."""
    _quiet_logs(verbose=args.verbose)
    line_buffered_stdout()
    try:
        async with stop_on_signals():
            return await _demo(settings, args)
    except Interrupted as stopped:
        shout(f"demo {stopped}: servers stopped, nothing left running")
        return stopped.exit_code
    except (EmbeddedError, EngineError) as error:
        shout(f"demo failed: {error}")
        if isinstance(error, EngineError):
            shout("(try `--engine fake` to see the plumbing without the model)")
        return EXIT_FAILED
    except NoService as error:
        shout(f"demo failed: {error}")
        return EXIT_FAILED
    except TimeoutError:
        shout(f"demo failed: the batch did not complete within {args.timeout} s")
        return EXIT_FAILED
