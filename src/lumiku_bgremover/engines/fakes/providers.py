"""Fake Hugging Face and Segmind servers that answer as their APIs document.

Hugging Face (hf-inference): `POST /hf-inference/models/<model>`, bearer token,
image bytes in, `[{"label", "score", "mask"}]` out (`mask`: base64 PNG, mode L);
errors are `{"error": ...}`, 503 adds `estimated_time` while a model loads, 429
carries `Retry-After`, 402 means the account's credits are spent. The fal route:
`POST /fal-ai/<model id>?_subdomain=queue` gives `request_id`, `status`,
`response_url`; `GET /fal-ai/<app>/requests/<id>/status` polls; `GET` of the
request gives `{"image": {"url": <data URL>}}` (sync mode), an RGBA cut-out.

Segmind: `POST /v1/<name>`, `x-api-key`, JSON `{"image": <base64 or URL>}`; a URL
is fetched over HTTP as Segmind fetches it (`fetched` lists them), and one that gives
no image is answered 400 (Segmind documents no body for it; ours is `{"error":
"image: could not fetch ..."}`, refused as a bad image is); answers the
cut-out as `image/png` bytes (RGBA) with `X-Remaining-Credits`; errors are
`{"error": ...}`: 401 bad key, 406 "Invalid content type" or insufficient
credits, 404 unknown model, 429 with `x-rate-limit-reset-at-utc` (no Retry-After).

Faults (`Fault`) answer as each provider answers trouble; the 200 answers a client
cannot use ("wrong_shape", "bad_base64", "not_a_mask") take each route's own shape
(hf-inference's segment list, fal's result, Segmind's JSON or image answer).

Mattes come from `fake_matte` (colour distance from the border), so a test knows
what the right answer is; a Segmind fake can be given another `matter` (a known
cut-out's true alpha, for the halo measure). `lumiku-bgremover demo --engine
hosted-fake` uses them to show routing, retries and the breaker without keys.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
import threading
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
from PIL import Image, UnidentifiedImageError

from lumiku_bgremover.engines.fake import fake_matte
from lumiku_bgremover.engines.fakes.server import FakeServer, Fault, Recorded, Reply

__all__ = [
    "FAL_APP",
    "FAL_MODEL",
    "FakeHuggingFace",
    "FakeSegmind",
    "Unfetchable",
    "cut_out_png",
    "fetch_image",
    "mask_png",
]

#: The fal model id HF maps RMBG-2.0 to, and the fal app its requests live under.
FAL_MODEL: Final = "fal-ai/bria/background/remove"
FAL_APP: Final = "fal-ai/bria"
_PNG: Final = "image/png"


def _json(status: int, payload: Any, *headers: tuple[str, str]) -> Reply:
    return Reply(status, json.dumps(payload).encode(), "application/json", tuple(headers))


def _load(data: bytes) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


#: Fault kinds answered with a 200 the client cannot use.
CORRUPT: Final = frozenset({"wrong_shape", "bad_base64", "not_a_mask"})
#: Not base64 (and not a data URL's payload either).
_NOT_BASE64: Final = "%%not*base64%%"
#: What a corrupt answer shows when the request carried no readable image.
_PLACEHOLDER: Final = (8, 8)


def photo_png(image: Image.Image | None) -> bytes:
    """`image` as a colour PNG without alpha (a photo, not a matte)."""
    buffer = io.BytesIO()
    rgb = image.convert("RGB") if image else Image.new("RGB", _PLACEHOLDER, (200, 30, 30))
    rgb.save(buffer, "PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def mask_png(image: Image.Image) -> bytes:
    """The fake matte of `image` as a single-channel PNG."""
    buffer = io.BytesIO()
    fake_matte(image).save(buffer, "PNG")
    return buffer.getvalue()


#: How a fake provider mattes the image it was sent (`fake_matte` unless a test knows better).
Matter = Callable[[Image.Image], Image.Image]


def cut_out_png(image: Image.Image, matter: Matter = fake_matte) -> bytes:
    """`image` with its matte as alpha, as an RGBA PNG (what removal APIs return)."""
    rgba = image.convert("RGBA")
    rgba.putalpha(matter(image))
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    return buffer.getvalue()


class FakeHuggingFace(FakeServer):
    """Hugging Face's router: hf-inference models and the fal provider queue."""

    def __init__(
        self,
        *,
        token: str = "hf_test",  # noqa: S107 - a fake server's fake token
        models: Collection[str] = ("briaai/RMBG-1.4",),
        polls_before_done: int = 1,
    ) -> None:
        super().__init__(self._route, self._fault)
        self.token, self.models, self.polls_before_done = token, set(models), polls_before_done
        self._queued: dict[str, tuple[Image.Image, int, str]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _route(self, request: Recorded) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _json(401, {"error": "Invalid credentials in Authorization header"})
        if request.method == "POST" and request.path.startswith("/hf-inference/models/"):
            return self._inference(request.path.removeprefix("/hf-inference/models/"), request)
        if request.method == "POST" and request.path == f"/fal-ai/{FAL_MODEL}":
            return self._submit(request)
        if request.method == "GET" and request.path.startswith(f"/fal-ai/{FAL_APP}/requests/"):
            return self._queue(request.path.removeprefix(f"/fal-ai/{FAL_APP}/requests/"))
        return _json(404, {"error": f"Not Found: {request.path}"})

    def _inference(self, model: str, request: Recorded) -> Reply:
        if model not in self.models:
            return _json(404, {"error": f"Model {model} does not exist"})
        image = _load(request.body)
        if image is None:
            return _json(400, {"error": "cannot identify image file"})
        mask = base64.b64encode(mask_png(image)).decode()
        return _json(200, [{"label": "foreground", "score": 1.0, "mask": mask}])

    def sent_image(self, request: Recorded) -> Image.Image | None:
        """The image a request carried (hf-inference bytes, or fal's data URL)."""
        if request.path.startswith("/hf-inference/"):
            return _load(request.body)
        return _load(_data_url_bytes(request.body)) if request.method == "POST" else None

    def _submit(self, request: Recorded, corrupt: str = "") -> Reply:
        image = _load(_data_url_bytes(request.body))
        if image is None:
            return _json(422, {"detail": [{"loc": ["body", "image_url"], "msg": "bad image"}]})
        request_id = f"req-{next(self._ids):04d}"
        with self._lock:
            self._queued[request_id] = (image, 0, corrupt)
        base = f"https://queue.fal.run/{FAL_APP}/requests/{request_id}"
        return _json(200, {
            "request_id": request_id, "status": "IN_QUEUE", "response_url": base,
            "status_url": f"{base}/status", "cancel_url": f"{base}/cancel",
        })  # fmt: skip

    def _queue(self, rest: str) -> Reply:
        request_id, _, action = rest.partition("/")
        with self._lock:
            found = self._queued.get(request_id)
            if found is not None and action == "status":
                self._queued[request_id] = (found[0], found[1] + 1, found[2])
        if found is None:
            return _json(404, {"detail": f"Request {request_id} not found"})
        image, polls, corrupt = found
        if action == "status":
            status = "COMPLETED" if polls + 1 >= self.polls_before_done else "IN_PROGRESS"
            return _json(200, {"status": status, "request_id": request_id})
        if corrupt:
            return _json(200, _corrupt_fal_result(corrupt, image))
        url = "data:image/png;base64," + _b64(cut_out_png(image))
        return _json(200, {"image": {"url": url, "content_type": _PNG,
                                     "width": image.width, "height": image.height}})  # fmt: skip

    def _fault(self, fault: Fault, request: Recorded) -> Reply:
        if fault.kind in CORRUPT:
            return self._corrupt(fault.kind, request)
        return _hf_trouble(fault)

    def _corrupt(self, kind: str, request: Recorded) -> Reply:
        if request.path.startswith("/hf-inference/"):
            return _json(200, _corrupt_segments(kind, self.sent_image(request)))
        return self._submit(request, corrupt=kind)  # its result will be unusable


def _hf_trouble(fault: Fault) -> Reply:
    """Hugging Face's answer to an error fault."""
    if fault.kind == "loading":
        return _json(503, {"error": "Model briaai/RMBG-1.4 is currently loading",
                           "estimated_time": fault.seconds})  # fmt: skip
    if fault.kind == "rate_limited":
        return _json(429, {"error": "Rate limit reached. Please retry later."},
                     ("Retry-After", f"{fault.seconds:g}"))  # fmt: skip
    if fault.kind == "credits":
        return _json(402, {"error": "You have exceeded your monthly included credits."})
    if fault.kind == "garbage":
        return Reply(200, b"<html>upstream error</html>", "text/html")
    return _json(fault.status or 500, {"error": _HF_ERRORS.get(fault.status, "Internal")})


def _corrupt_segments(kind: str, image: Image.Image | None) -> Any:
    """An hf-inference 200 a client cannot use."""
    if kind == "wrong_shape":
        return {"generated_text": "foreground"}  # another task's shape, not a segment list
    mask = _NOT_BASE64 if kind == "bad_base64" else _b64(photo_png(image))
    return [{"label": "foreground", "score": 1.0, "mask": mask}]


def _corrupt_fal_result(kind: str, image: Image.Image) -> Any:
    """A fal result a client cannot use."""
    if kind == "wrong_shape":
        return {"images": [{"url": "data:image/png;base64," + _b64(cut_out_png(image))}]}
    payload = _NOT_BASE64 if kind == "bad_base64" else _b64(photo_png(image))
    return {"image": {"url": f"data:image/png;base64,{payload}", "content_type": _PNG}}


_HF_ERRORS: Final = {
    400: "cannot identify image file",
    401: "Invalid credentials in Authorization header",
    403: "This authentication method does not have sufficient permissions",
    404: "Model not found",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def _data_url_bytes(body: bytes) -> bytes:
    try:
        url = json.loads(body).get("image_url", "")
        return base64.b64decode(url.split(",", 1)[1], validate=True)
    except (ValueError, AttributeError, IndexError, binascii.Error):
        return b""


class FakeSegmind(FakeServer):
    """Segmind's serverless API for background-removal models."""

    def __init__(
        self,
        *,
        api_key: str = "SG_test",
        models: Collection[str] = ("birefnet-general", "birefnet-portrait"),
        balance: int = 1_000_000,
        matter: Matter = fake_matte,
    ) -> None:
        super().__init__(self._route, self._fault)
        self.api_key, self.models, self.credits = api_key, set(models), balance
        self.matter = matter
        self._lock = threading.Lock()
        self._fetched: list[str] = []

    @property
    def fetched(self) -> list[str]:
        """The image URLs fetched so far, in order (a copy)."""
        with self._lock:
            return list(self._fetched)

    def _route(self, request: Recorded) -> Reply:
        key = request.headers.get("x-api-key")
        if key is None:
            return _json(401, {"error": "Missing Authorization or x-api-key in header"})
        if key != self.api_key:
            return _json(401, {"error": "Unauthorized. API key is invalid or may have expired"})
        model = request.path.removeprefix("/v1/")
        if request.method != "POST" or not request.path.startswith("/v1/"):
            return Reply(405, b"<html>405 Method Not Allowed</html>", "text/html")
        if model not in self.models:
            return _json(404, {"error": f"Model {model} not found"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _json(406, {"error": "Invalid content type"})
        return self._remove(request)

    def sent_image(self, request: Recorded) -> Image.Image | None:
        """The image a request carried (base64 in the JSON body, or behind its URL)."""
        try:
            return _load(self._payload(request))
        except Unfetchable:
            return None

    def _payload(self, request: Recorded) -> bytes:
        """The image bytes: the base64 field decoded, or its URL fetched (`Unfetchable`)."""
        value = _image_field(request.body)
        if "://" not in value:
            return _base64_bytes(value)
        with self._lock:
            self._fetched.append(value)
        return fetch_image(value)

    def _remove(self, request: Recorded) -> Reply:
        try:
            image = _load(self._payload(request))
        except Unfetchable as error:
            return _json(400, {"error": f"image: could not fetch the image URL: {error}"})
        if image is None:
            return _json(400, {"error": "image: could not decode the image"})
        with self._lock:
            if self.credits <= 0:
                return _json(406, {"error": "Insufficient credits: balance 0, needed 1"})
            self.credits -= 1
            left = self.credits
        cut_out = cut_out_png(image, self.matter)
        return Reply(200, cut_out, _PNG, (("X-Remaining-Credits", str(left)),))

    def _fault(self, fault: Fault, request: Recorded) -> Reply:
        if fault.kind in CORRUPT:
            return self._corrupt(fault.kind, request)
        return _segmind_trouble(fault)

    def _corrupt(self, kind: str, request: Recorded) -> Reply:
        if kind == "wrong_shape":
            return _json(200, {"status": "success", "output": None})
        if kind == "bad_base64":
            return _json(200, {"image": _NOT_BASE64})
        return Reply(200, photo_png(self.sent_image(request)), _PNG)


def _segmind_trouble(fault: Fault) -> Reply:
    """Segmind's answer to an error fault."""
    if fault.kind == "rate_limited":
        reset = datetime.now(UTC) + timedelta(seconds=fault.seconds)
        return _json(429, {"error": "rate_limit_exceeded"},
                     ("x-rate-limit-reset-at-utc", reset.isoformat()))  # fmt: skip
    if fault.kind == "credits":
        return _json(406, {"error": "Insufficient credits: balance 0, needed 1"})
    if fault.kind == "loading":
        return _json(503, {"error": "Service Unavailable"})
    if fault.kind == "garbage":
        return Reply(200, b"not an image", _PNG)
    return _json(fault.status or 500, {"error": _SEGMIND_ERRORS.get(fault.status, "Server Error")})


_SEGMIND_ERRORS: Final = {
    400: "image: could not decode the image",
    401: "Unauthorized. API key is invalid or may have expired",
    403: "This model is not available to your team",
    404: "Model not found",
    500: "Server Error",
    502: "Bad Gateway",
}


def _image_field(body: bytes) -> str:
    try:
        value = json.loads(body).get("image", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _base64_bytes(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return b""


class Unfetchable(Exception):  # noqa: N818 - the name reads as the condition it reports
    """An image URL that gave no image (refused, unreachable, an error status)."""


#: How long the fake waits on an image URL, and the most it reads from one.
FETCH_TIMEOUT_S: Final = 10.0
FETCH_MAX_BYTES: Final = 20 << 20


def fetch_image(url: str) -> bytes:
    """The bytes behind an http(s) `url`, as a provider fetches an image it was sent."""
    if not url.startswith(("http://", "https://")):
        raise Unfetchable(f"not an http(s) URL: {url.split('://', 1)[0]}://...")
    try:
        with httpx.stream("GET", url, timeout=FETCH_TIMEOUT_S) as response:
            if not response.is_success:
                raise Unfetchable(f"GET answered {response.status_code}")
            data = b"".join(response.iter_bytes())
    except httpx.HTTPError as error:
        raise Unfetchable(f"{type(error).__name__}: {error}") from None
    if len(data) > FETCH_MAX_BYTES:
        raise Unfetchable(f"larger than {FETCH_MAX_BYTES} bytes")
    return data
