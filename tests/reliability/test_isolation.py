"""One user cannot reach another's objects, batches, settings or results.

Already proven elsewhere (not repeated here): refs under another user's prefix or
outside the allow-list (`tests/integration/test_intake_rejections.py`,
`tests/usecases/test_intake.py`, and the hostile corpus); status and cancel of
another user's batch answer `not_found` (`tests/integration/test_pipeline.py`,
`tests/usecases/test_control.py`); ZIP name cleaning as a pure function
(`tests/unit/test_zipnames.py`).

Here, on the in-process service with real NATS, PostgreSQL and S3: a second user
can reach nothing of the first (objects, results, archive, status, cancel,
settings), every URL the service hands out is minted for its owner's own objects
only, hostile file names come back from the real ZIP as plain files in its root,
and a presigned URL stops working when its configured lifetime is over.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.settings import S3Settings
from tests.fixtures.s3 import S3Server
from tests.integration.pipeline_harness import (
    Client,
    batch_request,
    photo,
    service_and_client,
    with_fake_engine,
)
from tests.integration.service import service_settings
from tests.reliability.harness import eventually

pytestmark = pytest.mark.integration

#: Lifetime of presigned URLs in this module's service: long enough to fetch a URL as
#: soon as its event arrives, short enough to wait out.
TTL_S = 6
OWNER, OTHER = "alice", "mallory"
#: File names the contract accepts that try to leave or confuse an archive's root.
HOSTILE_NAMES = [
    "\u2215etc\u2215passwd.png",  # division slashes
    "\uff0e\uff0e\uff0fup.png",  # full-width dots and slash
    "%2e%2e%2fencoded.png",
    "photo\u202egnp.exe",  # right-to-left override
    "CON.png",
    " .hidden.png ",
    "a:b*c?.png",
    "....png",
    "\u00e9" * 255,  # 255 characters, 510 UTF-8 bytes
    "Same.PNG",
    "same.png",
    "e\u0301.png",  # decomposed é
]


@pytest.fixture
async def client(
    nats_url: str, nats_namespace: str, migrated_database_url: str, s3_settings: S3Settings
) -> AsyncIterator[Client]:
    settings = service_settings(nats_url, nats_namespace, migrated_database_url, s3_settings)
    s3 = dataclasses.replace(s3_settings, presign_ttl_s=TTL_S)
    storage = dataclasses.replace(settings.storage, s3=s3)
    async with service_and_client(
        with_fake_engine(dataclasses.replace(settings, storage=storage))
    ) as c:
        await c.grant(OWNER, 1000)
        await c.grant(OTHER, 1000)
        yield c


def finished(request_id: str) -> Any:
    def done(log: Any) -> bool:
        return any(e["request_id"] == request_id for e in log.of(subjects.BATCH_COMPLETED))

    return done


async def run_batch(client: Client, user: str, request_id: str, names: list[str]) -> dict[str, Any]:
    refs = [await client.upload(user, f"p{i}.png", photo(i)) for i in range(len(names))]
    body = batch_request(request_id, user, refs)
    for image, name in zip(body["images"], names, strict=True):
        image["filename"] = name
    await client.publish(subjects.BATCH_REQUESTED, body)
    await client.events.wait(finished(request_id), 60)
    [event] = [
        e for e in client.events.of(subjects.BATCH_COMPLETED) if e["request_id"] == request_id
    ]
    return event


async def rejected(client: Client, request_id: str) -> dict[str, Any]:
    def came(log: Any) -> bool:
        return any(e["request_id"] == request_id for e in log.of(subjects.REQUEST_REJECTED))

    await client.events.wait(came, 30)
    return next(
        e for e in client.events.of(subjects.REQUEST_REJECTED) if e["request_id"] == request_id
    )


async def test_another_user_reaches_nothing_of_the_owner(client: Client) -> None:
    batch = await run_batch(client, OWNER, "iso-owner", ["a.png", "b.png"])
    assert batch["status"] == "completed"
    done = [e for e in client.events.of(subjects.ITEM_DONE) if e["batch_id"] == batch["batch_id"]]
    bucket = client.store.bucket
    theirs = [
        {"bucket": bucket, "key": f"originals/{OWNER}/p0.png"},
        done[0]["result"],
        batch["archive"],
    ]
    for n, ref in enumerate(theirs):
        body = batch_request(f"iso-steal-{n}", OTHER, [ref])
        await client.publish(subjects.BATCH_REQUESTED, body)
        event = await rejected(client, f"iso-steal-{n}")
        assert (event["code"], event["path"], event["user_id"]) == (
            "forbidden_source", "$.images[0].ref", OTHER)  # fmt: skip

    status = await client.request(
        subjects.BATCH_STATUS, {"user_id": OTHER, "batch_id": batch["batch_id"]}
    )
    message = f"no batch {batch['batch_id']} of yours"
    assert status == {"status": "error", "code": "not_found", "message": message,
                      "path": "$.batch_id"}  # fmt: skip

    setting = {"app": "avatar-creator", "enabled": True, "tier": "industry"}
    mine = await client.request(subjects.SETTINGS_SET, {"user_id": OWNER, "setting": setting})
    assert mine["status"] == "ok"
    other = await client.request(subjects.SETTINGS_GET, {"user_id": OTHER, "app": "avatar-creator"})
    assert [(s["app"], s["enabled"]) for s in other["settings"]] == [("avatar-creator", False)]

    assert [e.reason for e in await client.ledger(OTHER)] == ["grant"]
    assert await client.balance(OTHER) == 1000
    assert [e for e in client.events.of(subjects.BATCH_ACCEPTED) if e["user_id"] == OTHER] == []
    assert_urls_only_for_owners(client)


def assert_urls_only_for_owners(client: Client) -> None:
    """Every URL handed out names an object under its own event's user."""
    minted = 0
    for _subject, body, _headers in client.events.seen:
        for ref_field, url_field in (("result", "url"), ("archive", "archive_url")):
            if body.get(url_field):
                minted += 1
                key = body[ref_field]["key"]
                assert key.split("/")[1] == body["user_id"], body
                assert PurePosixPath(httpx.URL(body[url_field]).path).parts[2:] == tuple(
                    key.split("/")
                )
    assert minted >= 3  # two results and one archive at least


async def test_zip_entries_stay_in_the_archive_root(client: Client, tmp_path: Path) -> None:
    batch = await run_batch(client, OWNER, "iso-zip", HOSTILE_NAMES)
    assert batch["succeeded"] == len(HOSTILE_NAMES)
    data = await client.store.get_bytes(batch["archive"]["key"], max_bytes=50_000_000)
    names, extracted, around = extract(data, tmp_path)
    for name in names:
        assert "/" not in name, name
        assert "\\" not in name, name
        assert not name.startswith("."), name
    assert len(extracted) == len(HOSTILE_NAMES) == len({n.casefold() for n in names})
    assert around == ["out"]  # nothing escaped the extraction folder


def extract(data: bytes, folder: Path) -> tuple[list[str], list[Path], list[str]]:
    """The archive's entry names, the plain files it unpacked to, what is beside them."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        archive.extractall(folder / "out")
    extracted = sorted((folder / "out").iterdir())
    assert all(path.is_file() for path in extracted)  # no folder: every entry in the root
    return names, extracted, sorted(p.name for p in folder.iterdir())


async def test_presigned_urls_expire_as_configured(client: Client, s3_server: S3Server) -> None:
    batch = await run_batch(client, OWNER, "iso-ttl", ["a.png"])
    [done] = [e for e in client.events.of(subjects.ITEM_DONE) if e["batch_id"] == batch["batch_id"]]
    url = httpx.URL(done["url"])
    assert url.params["X-Amz-Expires"] == str(TTL_S)
    minted = datetime.fromisoformat(done["completed_at"])
    assert datetime.fromisoformat(done["url_expires_at"]) - minted == timedelta(seconds=TTL_S)
    async with httpx.AsyncClient() as http:
        fresh = await http.get(url)
        assert fresh.status_code == 200, "valid right after minting"
        assert fresh.content == await client.store.get_bytes(done["result"]["key"], max_bytes=10**7)
        if s3_server.kind == "moto":
            pytest.skip(
                "moto's S3 server does not check presigned expiry (MinIO or S3_ENDPOINT does)"
            )

        async def refused() -> bool:
            return (await http.get(url)).status_code == 403

        await eventually(refused, TTL_S + 30, "the presigned URL refused after its lifetime")
        assert "expired" in (await http.get(url)).text.lower()
