"""`lumiku-bgremover demo --engine hosted-fake`: the hosted engines' routing, retries and
breaker against the fake providers, as a user runs it (a subprocess, no keys)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from lumiku_bgremover.devtools.embedded import EmbeddedError, find_nats_server
from tests.fixtures._common import unavailable
from tests.integration.test_demo import assert_nothing_left, base_env, photo_folder, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module", autouse=True)
def embedded_available() -> None:
    try:
        find_nats_server()
    except EmbeddedError as error:
        unavailable(f"the embedded stack cannot start here: {error}")
    if importlib.util.find_spec("pgserver") is None:
        unavailable("the embedded stack cannot start here: pgserver is not installed")


def test_hosted_fake_retries_then_opens_the_breaker_and_falls_back(tmp_path: Path) -> None:
    photos, work, out = tmp_path / "photos", tmp_path / "work", tmp_path / "out"
    names = photo_folder(photos, [(64, 48)] * 5)
    env = base_env(HF_TOKEN="", SEGMIND_API_KEY="")  # no real keys anywhere

    result = run_demo(str(photos), "--engine", "hosted-fake", "--tier", "basic",
                      "--workdir", str(work), "--out", str(out), env=env)  # fmt: skip

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"fake Hugging Face at http://127\.0\.0\.1:\d+, fake Segmind at", output)
    assert (
        "tier basic: huggingface / briaai/RMBG-1.4, fallback segmind / birefnet-general" in output
    )
    assert "tier professional: segmind / birefnet-general, fallback huggingface" in output
    assert "scripted on huggingface: 503 model loading (0.3 s), 429 rate limited" in output
    served = re.findall(r"^  done    (.+?)  64x48  [\d.]+ s  (\S+) / (\S+)$", output, re.MULTILINE)
    assert sorted(name for name, _, _ in served) == sorted(names)
    engines = [engine for _, engine, _ in served]
    assert engines.count("huggingface") == 1, served  # the first, after two retries
    assert engines.count("segmind") == 4, served  # the fallback, the breaker open
    assert "circuit breaker is open" in output
    assert "credits: 15 charged, 0 refunded, 15 paid" in output
    hf = re.search(
        r"^fake huggingface: (\d+) requests \(POST /hf-inference/models/", output, re.MULTILINE
    )
    assert hf is not None, output
    # 503, 429, the normal answer, then failures until the breaker opens (3, or a few more
    # when items run at once), never the whole burst of 9
    assert 6 <= int(hf[1]) < 12
    assert "fake segmind: 4 requests (POST /v1/birefnet-general x4)" in output
    assert_nothing_left(str(work), output)
