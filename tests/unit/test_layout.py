"""The layout DESIGN.md draws: the service core never imports the developer tooling."""

import subprocess
import sys

SERVICE_MODULES = (
    "lumiku_bgremover.app",
    "lumiku_bgremover.pipeline.runtime",
    "lumiku_bgremover.handlers.requests",
    "lumiku_bgremover.queue",
    "lumiku_bgremover.db.batches",
)


def test_the_service_core_does_not_import_devtools() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in SERVICE_MODULES)
        + "print(sorted(m for m in sys.modules if m.startswith('lumiku_bgremover.devtools')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_the_queue_package_exports_its_protocol_and_both_implementations() -> None:
    from lumiku_bgremover import queue  # noqa: PLC0415

    for name in ("WorkQueue", "JetStreamWorkQueue", "InMemoryWorkQueue", "WorkQueueRunner"):
        assert name in queue.__all__
