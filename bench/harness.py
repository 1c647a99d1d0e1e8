"""Shared pieces of the benchmarks: the embedded stack, the service as a child process,
a client that runs batches, photos, rounds and medians.

Everything here runs in `bench/.venv` (see `bench/run.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lumiku_bgremover.contracts import BatchRequested, ImageInput
from lumiku_bgremover.contracts.subjects import QUOTE, with_prefix
from lumiku_bgremover.devtools.embedded.client import AppClient, app_client, wait_answering
from lumiku_bgremover.devtools.embedded.stack import (
    EmbeddedStack,
    embedded_stack,
    environment,
    routes_to,
    stack_settings,
)
from lumiku_bgremover.messaging import connect
from lumiku_bgremover.settings import Settings

BENCH = Path(__file__).resolve().parent
SERVICE_BIN = Path(sys.executable).with_name("lumiku-bgremover")
MIB = 1024 * 1024


@dataclass(slots=True)
class Rounds:
    """Samples per variant, measured in interleaved rounds."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, variant: str, value: float) -> None:
        self.samples.setdefault(variant, []).append(value)

    def median(self, variant: str) -> float:
        return statistics.median(self.samples[variant])

    def ratio(self, variant: str, baseline: str) -> float:
        return self.median(variant) / self.median(baseline)


async def interleaved(
    rounds: int, variants: Mapping[str, Callable[[], Awaitable[float]]]
) -> Rounds:
    """Run every variant once per round, in turn (rotating who goes first)."""
    result = Rounds()
    names = list(variants)
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            value = await variants[name]()
            result.add(name, value)
            print(f"    round {index + 1}/{rounds} {name}: {value:.3f}", flush=True)
    return result


# --- photos -----------------------------------------------------------------------


def real_photos(count: int) -> list[Image.Image]:
    """`count` RGB photos from scikit-image, then crops of them when more are needed."""
    from skimage import data  # noqa: PLC0415

    names = ["astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry",
             "retina", "colorwheel"]  # fmt: skip
    base = []
    for name in names:
        with contextlib.suppress(Exception):  # some need a download; skip those
            array = getattr(data, name)()
            if array.ndim == 3 and array.shape[2] >= 3:
                base.append(Image.fromarray(array[:, :, :3]).convert("RGB"))
    photos = list(base)
    step = 0
    while len(photos) < count:
        source = base[step % len(base)]
        width, height = source.size
        inset = 8 + 16 * (step // len(base))
        photos.append(source.crop((inset, inset, width - inset // 2, height - inset // 3)))
        step += 1
    return photos[:count]


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def noise_png(target_bytes: int, seed: int = 7) -> bytes:
    """A valid RGB PNG of random pixels of about `target_bytes` (incompressible)."""
    side = int((target_bytes / 3) ** 0.5)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


# --- the stack and the service ------------------------------------------------------


@dataclass(slots=True)
class Bench:
    """The embedded stack, and settings pointing at it."""

    stack: EmbeddedStack
    settings: Settings


@contextlib.asynccontextmanager
async def bench_stack(workdir: Path) -> AsyncIterator[Bench]:
    async with embedded_stack(workdir) as stack:
        settings = stack_settings(stack, Settings(), routes_to("fake", "fake"))
        yield Bench(stack, settings)


def service_env(bench: Bench, engine: str, model: str, **extra: str) -> dict[str, str]:
    settings = replace(
        bench.settings,
        engines=replace(bench.settings.engines, routes=routes_to(engine, model)),
    )
    env = {**os.environ, **environment(settings)}
    env |= {"NATS_SUBJECT_PREFIX": settings.nats.subject_prefix,
            "NATS_STREAM_PREFIX": settings.nats.stream_prefix}  # fmt: skip
    env |= {"METRICS_PORT": "0", "LOG_LEVEL": "WARNING", "WORKER_CONCURRENCY": "2"}
    return env | extra


@contextlib.contextmanager
def service(env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`lumiku-bgremover run` as a child process; stopped (SIGTERM) on exit."""
    with log.open("ab") as sink:
        proc = subprocess.Popen([str(SERVICE_BIN), "run"], env=dict(env), stdout=sink,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def until_answering(bench: Bench, timeout_s: float = 180.0) -> None:
    nc = await connect(bench.settings.nats, name="bench-probe")
    try:
        subject = with_prefix(bench.settings.nats.subject_prefix, QUOTE)
        await wait_answering(nc, subject, timeout_s=timeout_s)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def running(bench: Bench, env: Mapping[str, str], log: Path, count: int = 1
                  ) -> AsyncIterator[list[subprocess.Popen[bytes]]]:  # fmt: skip
    """`count` service processes (the first serves everything, the others only work)."""
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(service(env, log))]
        await until_answering(bench)
        worker = {**env, "ROLE": "worker"}
        procs.extend(stack.enter_context(service(worker, log)) for _ in range(count - 1))
        if count > 1:
            await asyncio.sleep(8.0)  # the worker's model and consumer come up
        yield procs


# --- a client that runs batches -------------------------------------------------------


@dataclass(slots=True)
class Uploaded:
    images: list[ImageInput]


async def upload_all(client: AppClient, user: str, blobs: list[bytes], kind: str) -> Uploaded:
    run = uuid.uuid4().hex[:8]
    images = []
    for index, blob in enumerate(blobs):
        key = f"originals/{user}/{run}/{index:04d}.{kind}"
        ref = await client.upload(key, blob, f"image/{kind}")
        images.append(ImageInput(filename=f"{index:04d}.{kind}", ref=ref, size_bytes=len(blob)))
    return Uploaded(images)


async def run_batch(client: AppClient, user: str, uploaded: Uploaded, *, timeout_s: float,
                    tier: str = "basic") -> Any:  # fmt: skip
    """Run one batch to completion; the outcome (wall time in `wall_s`)."""
    await client.grant(user, 100_000, key=f"bench-{uuid.uuid4().hex}")
    request = BatchRequested(request_id=f"bench-{uuid.uuid4().hex}", user_id=user, tier=tier,
                             images=tuple(uploaded.images))  # type: ignore[arg-type]  # fmt: skip
    outcome = await client.run_batch(request, timeout_s=timeout_s)
    if outcome.completed is None or outcome.failed:
        reason = outcome.rejected or [f.code for f in outcome.failed][:3]
        raise RuntimeError(f"batch did not complete cleanly: {reason}")
    return outcome


def alpha_of(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGBA"))[:, :, 3].astype(np.float32) / 255.0


def agreement(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """(mean absolute alpha difference, IoU of alpha >= 0.5)."""
    union = float(((first >= 0.5) | (second >= 0.5)).sum())
    iou = float(((first >= 0.5) & (second >= 0.5)).sum()) / union if union else 1.0
    return float(np.abs(first - second).mean()), iou


__all__ = ["AppClient", "app_client", "time"]
