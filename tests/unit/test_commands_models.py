"""`lumiku-bgremover models list|fetch`, in-process and once as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumiku_bgremover.cli import main, parser
from lumiku_bgremover.commands import models as models_cmd
from lumiku_bgremover.engines import weights
from lumiku_bgremover.settings import Settings
from tests.fixtures.hub import DIGEST, PAYLOAD, Hub, Route, serving

OTHER = "0" * 64


@pytest.fixture
def hub() -> Iterator[Hub]:
    with serving() as server:
        server.routes["/u2net.onnx"] = Route()
        server.routes["/rmbg.onnx"] = Route(headers={"X-Linked-Etag": f'"{DIGEST}"'})
        yield server


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_verified", {})


def run(env: dict[str, str], *argv: str) -> int:
    args = parser().parse_args(["models", *argv])
    return asyncio.run(models_cmd.run(Settings.from_env(env), args))


def test_list_shows_every_model_with_source_pin_cache_and_licence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "u2net.onnx").write_bytes(b"placed")
    env = {
        "MODEL_CACHE_DIR": str(tmp_path),
        "MODEL_SOURCES": f"rmbg-1.4=https://m.example/r#{OTHER}",
    }
    assert run(env, "list", "--json") == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == [
        "birefnet",
        "isnet-medium",
        "isnet-medium-fp32",
        "isnet-small",
        "rmbg-1.4",
        "u2net",
    ]
    assert (rows["isnet-medium-fp32"]["source"], rows["isnet-medium-fp32"]["size"]) == (
        "derived",
        176_216_494,
    )
    assert rows["isnet-medium"] | {"cached": None} == {
        "name": "isnet-medium", "input_size": 1024, "mean": [0.5, 0.5, 0.5],
        "std": [1.0, 1.0, 1.0], "output": "minmax", "source": "npm", "url": None,
        "sha256": "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
        "size": 88_188_479, "cached": None,
        "licence": "AGPL-3.0 (npm bundle); IS-Net code Apache-2.0",
    }  # fmt: skip
    assert (rows["rmbg-1.4"]["url"], rows["rmbg-1.4"]["sha256"]) == ("https://m.example/r", OTHER)
    assert "non-commercial" in rows["rmbg-1.4"]["licence"]
    assert rows["birefnet"]["sha256"].startswith("58f621f0")
    assert rows["birefnet"]["licence"] == "MIT"
    assert (rows["u2net"]["source"], rows["u2net"]["sha256"]) == ("hub", None)
    assert rows["u2net"]["cached"] == str(tmp_path / "u2net.onnx")
    assert run(env, "list") == 0
    text = capsys.readouterr().out
    assert f"models in {tmp_path}:" in text
    assert "u2net         320px imagenet minmax" in text
    assert "not pinned" in text
    assert "cached" in text


def test_fetch_downloads_verifies_and_caches(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "MODEL_CACHE_DIR": str(tmp_path),
        "MODEL_SOURCES": (
            f"u2net={hub.url('/u2net.onnx')}#{DIGEST},rmbg-1.4={hub.url('/rmbg.onnx')}"
        ),
    }
    assert run(env, "fetch", "u2net", "rmbg-1.4") == 0
    out = capsys.readouterr().out
    assert f"u2net: {tmp_path / 'u2net.onnx'} ({len(PAYLOAD)} bytes, verified)" in out
    assert (tmp_path / "rmbg-1.4.onnx").read_bytes() == PAYLOAD
    assert run(env, "fetch", "u2net") == 0  # cached: no second download
    assert hub.gets == {"/u2net.onnx": 1, "/rmbg.onnx": 1}


def test_fetch_refuses_unpinned_weights_unless_trusted(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"MODEL_CACHE_DIR": str(tmp_path), "MODEL_SOURCES": f"u2net={hub.url('/u2net.onnx')}"}
    assert run(env, "fetch", "u2net") == 1
    err = capsys.readouterr().err
    assert "models fetch u2net: failed:" in err
    assert "MODEL_SOURCES as name=url#sha256" in err
    assert "--trust-unpinned" in err
    assert not (tmp_path / "u2net.onnx").exists()
    assert run(env, "fetch", "u2net", "--trust-unpinned") == 0
    assert (tmp_path / "u2net.onnx").read_bytes() == PAYLOAD


def test_fetch_reports_each_failure_and_fails(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "MODEL_CACHE_DIR": str(tmp_path),
        "MODEL_SOURCES": (
            f"u2net={hub.url('/gone.onnx')}#{DIGEST},birefnet={hub.url('/u2net.onnx')}#{OTHER}"
        ),
    }
    assert run(env, "fetch", "u2net", "birefnet") == 1
    err = capsys.readouterr().err
    assert "models fetch u2net: failed:" in err
    assert "answered 404: check its URL in MODEL_SOURCES" in err
    assert f"models fetch birefnet: failed: {hub.url('/u2net.onnx')} gave sha256 {DIGEST}" in err
    assert run(env, "fetch", "no-such-model") == 1
    assert (
        "unknown model(s) no-such-model; known: birefnet, isnet-medium" in capsys.readouterr().err
    )


def test_models_fetch_as_a_subprocess(hub: Hub, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_SOURCES": f"u2net={hub.url('/u2net.onnx')}#{DIGEST}",
    }
    command = [sys.executable, "-m", "lumiku_bgremover.cli", "models"]
    done = subprocess.run([*command, "fetch", "u2net"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "u2net: " in done.stdout
    listed = subprocess.run([*command, "list", "--json"], env=env, capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["u2net"]["cached"] == str(tmp_path / "cache" / "u2net.onnx")
    failed = subprocess.run([*command, "fetch", "birefnet"], env=env | {"MODEL_SOURCES": ""},
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert failed.returncode == 1  # no network here: the default BiRefNet URL is unreachable
    assert "models fetch birefnet: failed: downloading https://github.com/" in failed.stderr


def test_the_command_is_in_the_table() -> None:
    with pytest.raises(SystemExit) as info:
        main(["models", "--help"])
    assert info.value.code == 0
