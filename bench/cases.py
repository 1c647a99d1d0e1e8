"""The benchmarks B1-B6 (issue 12). Each returns a dict for latest.json: its variants'
samples and medians, the ratio against its baseline, and whether its goal is met."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import numpy as np

from bare import OrtLoop, RembgLoop, compose_images_per_s, pillow_images_per_s
from harness import (
    BENCH,
    MIB,
    Bench,
    agreement,
    alpha_of,
    app_client,
    interleaved,
    jpeg,
    noise_png,
    real_photos,
    run_batch,
    running,
    service,
    service_env,
    upload_all,
)
from lumiku_bgremover.contracts.subjects import QUOTE, with_prefix
from lumiku_bgremover.engines.weights import resolve_weights
from lumiku_bgremover.settings import EngineSettings


@dataclass(frozen=True, slots=True)
class Size:
    """How big each benchmark is: QUICK or full."""

    rounds: int
    b1_photos: int
    b2_photos: int
    b3_seconds: float
    b4_images: int
    b5_background: int
    b6_photos: int
    #: B1's informational variant (one item, all cores): a second deployment and a
    #: quarter of B1's inferences, left out of QUICK to keep it under 5 minutes.
    b1_all_cores: bool

    @classmethod
    def pick(cls, *, quick: bool) -> Size:
        if quick:
            return cls(3, 2, 16, 2.0, 30, 60, 8, b1_all_cores=False)
        return cls(3, 8, 40, 5.0, 500, 500, 40, b1_all_cores=True)


def summary(rounds: Any, unit: str, baseline: str) -> dict[str, Any]:
    return {
        "unit": unit,
        "baseline": baseline,
        "samples": rounds.samples,
        "medians": {name: rounds.median(name) for name in rounds.samples},
        "ratios": {name: rounds.ratio(name, baseline) for name in rounds.samples},
    }


def prefixed(bench: Bench, subjects: str, streams: str) -> Bench:
    """The same servers under other subject and stream prefixes: a separate deployment."""
    nats_settings = replace(bench.settings.nats, subject_prefix=subjects, stream_prefix=streams)
    return Bench(bench.stack, replace(bench.settings, nats=nats_settings))


# --- B1: the local engine ------------------------------------------------------------------


async def b1_local(bench: Bench, size: Size, logs: Path) -> dict[str, Any]:
    cache = EngineSettings().model_cache_dir
    shipped = resolve_weights("isnet-medium", cache)
    resolve_weights("isnet-medium-fp32", cache)
    blobs = [jpeg(photo) for photo in real_photos(size.b1_photos)]
    ort_loop, rembg_loop = OrtLoop(shipped), RembgLoop(shipped)
    ort_loop.one(blobs[0])  # both bare loops warm up too, as the service does
    rembg_loop.images_per_s(blobs[:1])
    env = service_env(bench, "local", "isnet-medium-fp32")
    alt = prefixed(bench, "alt.", "ALT")  # a second deployment: one item, all cores
    alt_env = service_env(alt, "local", "isnet-medium-fp32", WORKER_CONCURRENCY="1",
                          LOCAL_ENGINE_THREADS=str(len(os.sched_getaffinity(0))))  # fmt: skip
    mattes: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running(bench, env, logs / "b1.log"))
        client = await stack.enter_async_context(app_client(bench.settings))
        if size.b1_all_cores:
            await stack.enter_async_context(running(alt, alt_env, logs / "b1-alt.log"))
            alt_client = await stack.enter_async_context(app_client(alt.settings))
        uploaded = await upload_all(client, "bench-b1", blobs, "jpeg")

        async def service() -> float:
            outcome = await run_batch(client, "bench-b1", uploaded, timeout_s=900)
            mattes["service"] = {d.index: (d.result.bucket, d.result.key) for d in outcome.done}
            return len(blobs) / outcome.wall_s

        async def one_at_a_time() -> float:
            outcome = await run_batch(alt_client, "bench-b1", uploaded, timeout_s=900)
            return len(blobs) / outcome.wall_s

        async def bare() -> float:
            rate, results = await asyncio.to_thread(ort_loop.images_per_s, blobs)
            mattes["bare"] = results
            return rate

        async def rembg() -> float:
            return await asyncio.to_thread(rembg_loop.images_per_s, blobs)

        variants = {"service": service, "bare_ort": bare, "rembg": rembg}
        if size.b1_all_cores:
            variants["service_1_item_all_cores"] = one_at_a_time
        rounds = await interleaved(size.rounds, variants)
        checks = [agreement(alpha_of(await client.fetch(*ref)), alpha_of(mattes["bare"][index]))
                  for index, ref in mattes["service"].items()]  # fmt: skip
    result = summary(rounds, "images/s", "bare_ort")
    result["vs_rembg"] = rounds.ratio("service", "rembg")
    result["matte_mean_abs_diff_max"] = max(c[0] for c in checks)
    result["matte_iou_min"] = min(c[1] for c in checks)
    result["config"] = {"photos": len(blobs), "service_model": "isnet-medium-fp32",
                        "bare_and_rembg_model": "isnet-medium (shipped)"}  # fmt: skip
    result["goal"] = "service >= 1.0x bare, >= 1.3x rembg, mattes within 1 % and IoU >= 0.99"
    result["met"] = (result["ratios"]["service"] >= 1.0 and result["vs_rembg"] >= 1.3
                     and result["matte_mean_abs_diff_max"] <= 0.01
                     and result["matte_iou_min"] >= 0.99)  # fmt: skip
    return result


# --- B2: plumbing with the fake engine --------------------------------------------------------


async def b2_plumbing(bench: Bench, size: Size, logs: Path) -> dict[str, Any]:
    blobs = [jpeg(photo) for photo in real_photos(size.b2_photos)]
    env = service_env(bench, "fake", "fake")
    async with running(bench, env, logs / "b2.log"), app_client(bench.settings) as client:
        uploaded = await upload_all(client, "bench-b2", blobs, "jpeg")

        async def service() -> float:
            outcome = await run_batch(client, "bench-b2", uploaded, timeout_s=600)
            return len(blobs) / outcome.wall_s

        async def bare() -> float:
            return await asyncio.to_thread(pillow_images_per_s, blobs)

        async def bare_compose() -> float:
            return await asyncio.to_thread(compose_images_per_s, blobs)

        rounds = await interleaved(size.rounds, {"service": service, "bare_pillow": bare,
                                                 "bare_service_compose": bare_compose})  # fmt: skip
    result = summary(rounds, "images/s", "bare_pillow")
    result["plumbing_ratio"] = rounds.ratio("service", "bare_service_compose")
    result["goal"] = "service >= 0.8x the bare Pillow loop"
    result["met"] = result["ratios"]["service"] >= 0.8
    return result


# --- B3: quotes ---------------------------------------------------------------------------------

REQUESTERS = 64
#: Seconds a second worker process takes to bind its consumers (fake engine).
WORKER_START_S = 5.0


async def hammer(url: str, subject: str, seconds: float) -> tuple[float, float]:
    """(requests/s, p99 ms) of `REQUESTERS` concurrent requesters for `seconds`."""
    nc = await nats.connect(url)
    body = json.dumps({"user_id": "bench-b3", "tier": "basic", "count": 1,
                       "mode": "single"}).encode()  # fmt: skip
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def requester() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await nc.request(subject, body, timeout=10)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(requester() for _ in range(REQUESTERS)))
    elapsed = time.perf_counter() - started
    await nc.close()
    return len(latencies) / elapsed, float(np.percentile(latencies, 99)) * 1000


@contextlib.contextmanager
def responder(*args: str) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, str(BENCH / "responder.py"), *args],
                            stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def b3_quotes(bench: Bench, size: Size, logs: Path) -> dict[str, Any]:
    url = bench.stack.nats_url
    p99: dict[str, list[float]] = {}

    def variant(name: str, subject: str, *responder_args: str) -> Any:
        async def run() -> float:
            context = responder(*responder_args) if responder_args else contextlib.nullcontext()
            with context:
                rate, tail = await hammer(url, subject, size.b3_seconds)
            p99.setdefault(name, []).append(tail)
            return rate

        return run

    env = service_env(bench, "fake", "fake")
    async with running(bench, env, logs / "b3.log"):
        service_subject = with_prefix(bench.settings.nats.subject_prefix, QUOTE)
        rounds = await interleaved(size.rounds, {
            "service": variant("service", service_subject),
            "bare_nats": variant("bare_nats", "bench.fixed", "fixed", url, "bench.fixed"),
            "nats_asyncpg_one_query": variant("nats_asyncpg_one_query", "bench.db", "db", url,
                                              "bench.db", bench.stack.database_url),
        })  # fmt: skip
    result = summary(rounds, "quotes/s", "nats_asyncpg_one_query")
    result["p99_ms"] = {name: float(np.median(values)) for name, values in p99.items()}
    result["p99_ratio"] = result["p99_ms"]["service"] / result["p99_ms"]["nats_asyncpg_one_query"]
    result["goal"] = "service >= 0.8x the one-query floor, p99 <= 3x its p99"
    result["met"] = result["ratios"]["service"] >= 0.8 and result["p99_ratio"] <= 3.0
    return result


# --- B4 memory and B5 fairness --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def zip_growth(count: int) -> dict[str, Any]:
    out = BENCH / "results" / "archive-b4.json"
    subprocess.run([sys.executable, str(BENCH / "bench_archive.py"), "--count", str(count),
                    "--size", str(4 * MIB), "--repeat", "1", "--output", str(out)],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return json.loads(out.read_text())["results"]


async def b4_memory(bench: Bench, size: Size, logs: Path) -> dict[str, Any]:
    blob = noise_png(4 * MIB)
    env = service_env(bench, "fake", "fake")
    async with running(bench, env, logs / "b4.log") as procs, app_client(bench.settings) as client:
        uploaded = await upload_all(client, "bench-b4", [blob] * size.b4_images, "png")
        before = peak_rss_mib(procs[0].pid)
        outcome = await run_batch(client, "bench-b4", uploaded, timeout_s=1800)
        peak = peak_rss_mib(procs[0].pid)
    archive = await asyncio.to_thread(zip_growth, size.b4_images)
    streamed = archive["streamed"]["rss_growth_mib"]
    return {
        "unit": "MiB",
        "config": {"images": size.b4_images, "image_bytes": len(blob)},
        "worker_peak_rss_mib": peak,
        "worker_rss_before_batch_mib": before,
        "batch_wall_s": outcome.wall_s,
        "zip_rss_growth_mib": streamed,
        "zip_baseline_rss_growth_mib": archive["baseline"]["rss_growth_mib"],
        "ratios": {"zip_streamed_over_in_memory": streamed / archive["baseline"]["rss_growth_mib"]},
        "goal": "worker peak RSS <= 400 MiB, ZIP growth < 64 MiB",
        "met": peak <= 400 and streamed < 64,
    }


async def b5_fairness(bench: Bench, size: Size, logs: Path) -> dict[str, Any]:
    photos = [jpeg(photo.resize((640, 480))) for photo in real_photos(8)]
    background = [photos[i % len(photos)] for i in range(size.b5_background)]
    env = service_env(bench, "fake", "fake", FAKE_ENGINE_DELAY_S="0.05")
    async with running(bench, env, logs / "b5.log"), app_client(bench.settings) as client:
        big = await upload_all(client, "bench-b5-a", background, "jpeg")
        single = await upload_all(client, "bench-b5-b", photos[:1], "jpeg")

        async def alone() -> float:
            return (await run_batch(client, "bench-b5-b", single, timeout_s=120)).wall_s

        async def behind() -> float:
            batch = asyncio.create_task(run_batch(client, "bench-b5-a", big, timeout_s=1800))
            await asyncio.sleep(1.0)  # the batch is accepted and its items queued
            wall = (await run_batch(client, "bench-b5-b", single, timeout_s=1800)).wall_s
            await batch
            return wall

        rounds = await interleaved(size.rounds, {"alone": alone, "behind_batch": behind})
    result = summary(rounds, "seconds", "alone")
    result["item_times"] = result["ratios"]["behind_batch"]
    result["config"] = {"background_items": size.b5_background, "fake_delay_s": 0.05}
    result["goal"] = "single image behind a 500-item batch <= 5 item-times"
    result["met"] = result["item_times"] <= 5.0
    return result


# --- B6: scale-out --------------------------------------------------------------------------------


async def b6_scale(bench: Bench, size: Size, logs: Path) -> dict[str, Any]:
    """The fake engine's fixed CPU cost per item: decoding, matting, composing and
    encoding a 1600 x 1200 photo (1024 x 768 in QUICK), no sleep; one work slot each."""
    side = (1024, 768) if size.b6_photos < 16 else (1600, 1200)
    blobs = [jpeg(photo.resize(side)) for photo in real_photos(8)]
    blobs = [blobs[i % len(blobs)] for i in range(size.b6_photos)]
    env = service_env(bench, "fake", "fake", WORKER_CONCURRENCY="1")
    worker_env = {**env, "ROLE": "worker"}
    cores_used: dict[str, list[float]] = {}

    async def timed(name: str, procs: list[Any]) -> float:
        cpu_before = sum(cpu_seconds(proc.pid) for proc in procs)
        outcome = await run_batch(client, "bench-b6", uploaded, timeout_s=900)
        cpu = sum(cpu_seconds(proc.pid) for proc in procs) - cpu_before
        cores_used.setdefault(name, []).append(cpu / outcome.wall_s)
        return len(blobs) / outcome.wall_s

    async with running(bench, env, logs / "b6.log") as main, app_client(bench.settings) as client:
        uploaded = await upload_all(client, "bench-b6", blobs, "jpeg")

        async def one() -> float:
            return await timed("one_process", main)

        async def two() -> float:
            with service(worker_env, logs / "b6-worker.log") as worker:
                await asyncio.sleep(WORKER_START_S)
                return await timed("two_processes", [*main, worker])

        rounds = await interleaved(size.rounds, {"one_process": one, "two_processes": two})
    result = summary(rounds, "images/s", "one_process")
    result["cores_used"] = {name: float(np.median(v)) for name, v in cores_used.items()}
    result["goal"] = "two worker processes >= 1.7x one"
    result["met"] = result["ratios"]["two_processes"] >= 1.7
    return result


CASES = {"B1": b1_local, "B2": b2_plumbing, "B3": b3_quotes, "B4": b4_memory,
         "B5": b5_fairness, "B6": b6_scale}  # fmt: skip
