"""The corpus manifest as typed cases, and the bodies they send (pure: no I/O but reading files)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tests.reliability.corpus.generate import HERE, ensure

BATCH_REQUESTED: Final = "bgremove.batch.requested"
IMAGE_REQUESTED: Final = "bgremove.image.requested"
#: What every case user starts with.
GRANTED: Final = 100


@dataclass(frozen=True)
class Case:
    """One hostile input and the outcome the contract documents for it."""

    id: str
    input_class: str
    expect: str  #: rejected, failed or done
    subject: str = BATCH_REQUESTED
    code: str | None = None
    path: str | None = None
    body: str | None = None
    image: str | None = None
    url: str | None = None
    key: str | None = None
    bucket: str | None = None
    plant: bool = False
    with_good: bool = False
    declared_size: int | None = None
    width: int | None = None
    height: int | None = None
    ledger: tuple[str, ...] = ("grant",)
    balance: int = GRANTED
    user: str | None = None
    anonymous: bool = False

    @property
    def request_id(self) -> str:
        return f"corpus-{self.id}"


def load_cases(path: Path = HERE / "manifest.toml") -> list[Case]:
    """Every case of the manifest, in its order."""
    raw = tomllib.loads(path.read_text())["case"]
    cases = []
    for row in raw:
        entry = dict(row)
        entry["input_class"] = entry.pop("class")
        if "ledger" in entry:
            entry["ledger"] = tuple(entry["ledger"])
        cases.append(Case(**entry))
    return cases


def _file(name: str) -> Path:
    bodies = HERE / "bodies" / name
    return bodies if bodies.exists() else ensure(name)


def fill(template: bytes, *, user: str, request_id: str, bucket: str) -> bytes:
    """`template` with `@USER@`, `@REQ@` and `@BUCKET@` replaced."""
    for name, value in (("@USER@", user), ("@REQ@", request_id), ("@BUCKET@", bucket)):
        template = template.replace(name.encode(), value.encode())
    return template


def good_ref(user: str, bucket: str) -> dict[str, str]:
    return {"bucket": bucket, "key": f"originals/{user}/good.png"}


def image_key(case: Case, user: str) -> str:
    """Where an image case's file is uploaded."""
    assert case.image is not None
    return f"originals/{user}/{case.id}/{case.image}"


def hostile_ref(case: Case, user: str, bucket: str) -> dict[str, str]:
    if case.url is not None:
        return {"url": case.url}
    if case.key is not None:
        return {"bucket": case.bucket or bucket, "key": case.key.replace("@USER@", user)}
    return {"bucket": bucket, "key": image_key(case, user)}


def request_body(case: Case, user: str, bucket: str) -> bytes:
    """The bytes the case publishes."""
    if case.body is not None:
        template = _file(case.body).read_bytes()
        return fill(template, user=user, request_id=case.request_id, bucket=bucket)
    hostile: dict[str, Any] = {"filename": "hostile.png", "ref": hostile_ref(case, user, bucket)}
    if case.declared_size is not None:
        hostile["size_bytes"] = case.declared_size
    images = [{"filename": "good.png", "ref": good_ref(user, bucket)}] if case.with_good else []
    images.append(hostile)
    body: dict[str, Any] = {"request_id": case.request_id, "user_id": user, "tier": "standard"}
    if case.subject == IMAGE_REQUESTED:
        body["image"] = hostile
    else:
        body["images"] = images
    return json.dumps(body).encode()


def upload_path(case: Case) -> Path | None:
    """The corpus file an image case uploads."""
    return ensure(case.image) if case.image is not None else None
