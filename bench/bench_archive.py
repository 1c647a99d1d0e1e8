"""Benchmark: the streamed batch ZIP (`build_archive`) against a naive in-memory ZIP.

Run: `python bench/bench_archive.py` (from the repository root, with the project's
virtualenv). It writes random, incompressible "images" (200 MiB by default) into a local
store, or into an S3 API server with `--store s3` (a private moto server in another
process), then builds the same archive two ways, each in a fresh child process:

- streamed: `build_archive` (ZIP written into a bounded pipe, multipart `put_stream`);
- baseline: `zipfile` into a `BytesIO`, then one `put_bytes` of the whole archive.

Each variant runs twice for time and peak RSS (the best time is kept; RSS is the child's
peak resident size minus its size before the build) and once under `tracemalloc` for the
Python heap peak. It prints a table with the streamed/baseline ratios and writes
`bench/latest-archive.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lumiku_bgremover.settings import S3Settings
from lumiku_bgremover.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from lumiku_bgremover.storage.archive import ArchiveEntry, build_archive

if TYPE_CHECKING:
    from collections.abc import Iterator

MIB = 1024 * 1024
BUCKET = "lumiku-bench"
ARCHIVE_KEY = "archives/bench/batch.zip"
REPORT = Path(__file__).with_name("latest-archive.json")
VARIANTS = ("streamed", "baseline")


def entry_keys(count: int) -> list[str]:
    return [f"results/bench/b-1/{i}.png" for i in range(count)]


def make_store(kind: str, where: str) -> ObjectStore:
    if kind == "local":
        return LocalObjectStore(Path(where), BUCKET)
    settings = S3Settings(
        endpoint=where, access_key="bench", secret_key="bench", bucket=BUCKET, secure=False
    )
    return S3ObjectStore.from_settings(settings)


# --- one measurement, in a child process -------------------------------------------------


async def streamed(store: ObjectStore, count: int, size: int, part_size: int) -> int:
    entries = [ArchiveEntry(f"{i}.png", k) for i, k in enumerate(entry_keys(count))]
    info = await build_archive(
        store, ARCHIVE_KEY, entries, part_size=part_size, max_entry_bytes=size
    )
    return info.size


async def baseline(store: ObjectStore, count: int, size: int, part_size: int) -> int:
    del part_size  # one request: nothing to split
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i, key in enumerate(entry_keys(count)):
            data = await store.get_bytes(key, max_bytes=size)
            archive.writestr(f"{i}.png", data)
    info = await store.put_bytes(ARCHIVE_KEY, buffer.getvalue(), "application/zip")
    return info.size


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the archive once with `args.variant`; what it cost."""
    store = make_store(args.store, args.where)
    build = streamed if args.variant == "streamed" else baseline
    if args.trace:
        tracemalloc.start()
    rss_before = peak_rss_bytes()
    started = time.perf_counter()
    size = asyncio.run(build(store, args.count, args.size, args.part_size))
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"archive_bytes": size, "seconds": seconds}
    if args.trace:
        result["heap_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        result["rss_growth_bytes"] = peak_rss_bytes() - rss_before
    return result


# --- the parent: sources, children, report -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def store_location(kind: str) -> Iterator[str]:
    """A temporary directory, or the endpoint of a private moto server."""
    if kind == "local":
        with tempfile.TemporaryDirectory(prefix="bench-archive-") as root:
            (Path(root) / BUCKET).mkdir()
            yield root
        return
    port = free_port()
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the moto server did not start")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def put_sources(store: ObjectStore, count: int, size: int) -> None:
    await store.ensure_bucket()
    rng = random.Random(7)
    for key in entry_keys(count):
        await store.put_bytes(key, rng.randbytes(size), "image/png")


def run_child(args: argparse.Namespace, where: str, variant: str, *, trace: bool) -> Any:
    command = [
        sys.executable, __file__, "--child", "--variant", variant, "--store", args.store,
        "--where", where, "--count", str(args.count), "--size", str(args.size),
        "--part-size", str(args.part_size),
    ] + (["--trace"] if trace else [])  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout)


def run_all(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with store_location(args.store) as where:
        asyncio.run(put_sources(make_store(args.store, where), args.count, args.size))
        for variant in VARIANTS:
            timed = [run_child(args, where, variant, trace=False) for _ in range(args.repeat)]
            traced = run_child(args, where, variant, trace=True)
            best = min(r["seconds"] for r in timed)
            results[variant] = {
                "archive_mib": timed[0]["archive_bytes"] / MIB,
                "seconds": best,
                "mib_per_s": timed[0]["archive_bytes"] / MIB / best,
                "rss_growth_mib": max(r["rss_growth_bytes"] for r in timed) / MIB,
                "heap_peak_mib": traced["heap_peak_bytes"] / MIB,
            }
    return results


def report(args: argparse.Namespace, results: dict[str, dict[str, float]]) -> dict[str, Any]:
    s, b = results["streamed"], results["baseline"]
    ratios = {
        "throughput": s["mib_per_s"] / b["mib_per_s"],
        "rss_growth": s["rss_growth_mib"] / b["rss_growth_mib"],
        "heap_peak": s["heap_peak_mib"] / b["heap_peak_mib"],
    }
    return {
        "benchmark": "archive",
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "store": args.store,
            "entries": args.count,
            "entry_mib": args.size / MIB,
            "part_mib": args.part_size / MIB,
            "repeat": args.repeat,
        },
        "results": results,
        "ratios_streamed_over_baseline": ratios,
    }


def print_table(data: dict[str, Any]) -> None:
    cfg = data["config"]
    print(
        f"archive: {cfg['entries']} x {cfg['entry_mib']:g} MiB entries, "
        f"{cfg['part_mib']:g} MiB parts, {cfg['store']} store"
    )
    print(
        f"{'variant':<10} {'MiB/s':>8} {'seconds':>8} {'RSS growth MiB':>15} {'heap peak MiB':>14}"
    )
    for name, r in data["results"].items():
        print(
            f"{name:<10} {r['mib_per_s']:>8.1f} {r['seconds']:>8.2f} "
            f"{r['rss_growth_mib']:>15.1f} {r['heap_peak_mib']:>14.1f}"
        )
    ratios = data["ratios_streamed_over_baseline"]
    print(
        "streamed / baseline: "
        + ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items())
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["local", "s3"], default="local")
    parser.add_argument("--count", type=int, default=100, help="entries (default 100)")
    parser.add_argument("--size", type=int, default=2 * MIB, help="bytes per entry")
    parser.add_argument("--part-size", type=int, default=8 * MIB)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--output", type=Path, default=REPORT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--where", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return
    started = time.perf_counter()
    data = report(args, run_all(args))
    data["bench_seconds"] = round(time.perf_counter() - started, 1)
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    print_table(data)
    print(f"wrote {args.output} in {data['bench_seconds']} s")


if __name__ == "__main__":
    main()
