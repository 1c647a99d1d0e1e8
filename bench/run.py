"""`make bench` / `make bench QUICK=1`: B1-B6 of issue 12 in one run.

Installs what it needs into its own environment (`bench/.venv`: the project with its
local and embedded extras, rembg, matplotlib, scikit-image, py-spy), then re-runs itself
there. Starts a private nats-server and PostgreSQL (the embedded stack), runs the real
service as child processes, and writes `bench/results/latest.json`, `bench/REPORT.md`
and one PNG per benchmark in `bench/results/`.

    python3 bench/run.py [--quick] [--only B1,B3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
STAMP = VENV / ".installed"
PACKAGES = ["-e", f"{ROOT}[local,embedded]", "rembg", "matplotlib", "scikit-image", "py-spy",
            "psutil"]  # fmt: skip


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not STAMP.exists() or STAMP.stat().st_mtime < (ROOT / "pyproject.toml").stat().st_mtime:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
        STAMP.touch()
    return python


def machine() -> dict[str, object]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    flags = Path("/proc/cpuinfo").read_text()
    versions = {}
    for name in ("onnxruntime", "rembg", "faststream", "nats-py", "asyncpg", "pillow", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "avx512_vnni": "avx512_vnni" in flags, "kernel": platform.release(),
            "versions": versions}  # fmt: skip


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


async def run_cases(names: list[str], *, quick: bool) -> dict[str, object]:
    sys.path.insert(0, str(BENCH))
    from cases import CASES, Size  # noqa: PLC0415
    from harness import bench_stack  # noqa: PLC0415

    size = Size.pick(quick=quick)
    results: dict[str, object] = {}
    logs = BENCH / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lumiku-bench-") as workdir:
        async with bench_stack(Path(workdir)) as bench:
            for name in names:
                started, load = time.perf_counter(), load_average()
                print(f"{name} (load {load})", flush=True)
                try:
                    result = await CASES[name](bench, size, logs)
                except Exception as error:  # one failing benchmark must not lose the rest
                    result = {"error": f"{type(error).__name__}: {error}", "met": False}
                result |= {"seconds": time.perf_counter() - started, "load_before": load,
                           "load_after": load_average()}  # fmt: skip
                results[name] = result
                print(
                    f"{name}: {json.dumps(result.get('ratios', result.get('error')))}", flush=True
                )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="B1,B2,B3,B4,B5,B6")
    args = parser.parse_args()
    if Path(sys.prefix).resolve() != VENV.resolve():
        python = ensure_venv()
        return subprocess.call([str(python), __file__, *sys.argv[1:]])
    started, load = time.perf_counter(), load_average()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    results = asyncio.run(run_cases(names, quick=args.quick))
    data = {"generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full", "machine": machine(),
            "load_average_at_start": load, "load_average_at_end": load_average(),
            "seconds": round(time.perf_counter() - started, 1), "benchmarks": results}  # fmt: skip
    out = BENCH / "results" / "latest.json"
    out.write_text(json.dumps(data, indent=2, default=float) + "\n")
    sys.path.insert(0, str(BENCH))
    from report import write_report  # noqa: PLC0415

    write_report(data, BENCH / "REPORT.md", BENCH / "results")
    print(f"wrote {out} and {BENCH / 'REPORT.md'} in {data['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
