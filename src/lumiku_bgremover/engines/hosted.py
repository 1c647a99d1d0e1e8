"""What the hosted engines share: typed provider errors and reading HTTP answers.

`provider_error` maps an HTTP error answer to a `ProviderError`: the item's
`FailCode`, whether a later try may succeed, and how long the provider asked us to
wait (`Retry-After`, or Hugging Face's `estimated_time` while a model loads).

| status | meaning | code | retryable |
|---|---|---|---|
| 400, 413, 415, 422 | this image (or its request) was refused | engine_failed | no |
| 401, 403 | bad or missing key, no permission | engine_unavailable | no |
| 404, 410 | no such model or endpoint | engine_unavailable | no |
| 402, 406 | out of credits or over a spend limit (Segmind: 406) | engine_unavailable | yes |
| 408, 425, 429 | timeout, too early, rate limited | engine_unavailable | yes |
| 5xx (503: model loading) | the provider is in trouble | engine_unavailable | yes |
| any other | unexpected | engine_failed | no |

Transport failures (connection refused, reset, read timeouts) are retryable
`engine_unavailable`. A retryable error that outlives the retries is NAK'ed by the
work queue and tried again later; one that outlives the deliveries is refunded.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx
from PIL import Image, ImageChops, UnidentifiedImageError

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.engines.base import EngineError

__all__ = [
    "ProviderError",
    "alpha_of",
    "decode_base64_image",
    "encode_png",
    "error_message",
    "matte_of",
    "parse_retry_after",
    "provider_error",
    "transport_error",
]

_IMAGE_REFUSED: Final = frozenset({400, 413, 415, 422})
_NOT_SERVABLE: Final = frozenset({401, 403, 404, 410})
_OUT_OF_CREDIT: Final = frozenset({402, 406})
_TRY_LATER: Final = frozenset({408, 425, 429})
_SERVER_ERROR: Final = 500
#: The longest error body kept in a message.
_BODY_CHARS: Final = 300


class ProviderError(EngineError):
    """A hosted provider answered with an error (or could not be reached)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None,
        code: FailCode,
        retryable: bool,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, code=code, retryable=retryable)
        self.provider = provider
        self.status = status
        self.retry_after_s = retry_after_s


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_message(body: bytes) -> str:
    """The provider's own words: `error` (or `message`/`detail`) of a JSON body, else text."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:_BODY_CHARS]
    if isinstance(parsed, dict):
        for key in ("error", "message", "detail", "error_description"):
            if isinstance(parsed.get(key), str):
                return str(parsed[key])[:_BODY_CHARS]
    return json.dumps(parsed)[:_BODY_CHARS]


def _estimated_time(body: bytes) -> float | None:
    """Hugging Face's `estimated_time` (seconds) of a 503 "model loading" body."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return None
    value = parsed.get("estimated_time") if isinstance(parsed, dict) else None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def _classify(status: int) -> tuple[FailCode, bool]:
    if status in _IMAGE_REFUSED:
        return FailCode.ENGINE_FAILED, False
    if status in _NOT_SERVABLE:
        return FailCode.ENGINE_UNAVAILABLE, False
    if status in _OUT_OF_CREDIT or status in _TRY_LATER or status >= _SERVER_ERROR:
        return FailCode.ENGINE_UNAVAILABLE, True
    return FailCode.ENGINE_FAILED, False


def provider_error(provider: str, model: str, response: httpx.Response) -> ProviderError:
    """The typed error for an HTTP error answer (the body must have been read)."""
    code, retryable = _classify(response.status_code)
    wait = parse_retry_after(response.headers.get("retry-after"))
    if wait is None and response.status_code == 503:  # noqa: PLR2004 - HF: model loading
        wait = _estimated_time(response.content)
    said = error_message(response.content)
    return ProviderError(
        f"{provider} answered {response.status_code} for model {model!r}: {said}",
        provider=provider,
        status=response.status_code,
        code=code,
        retryable=retryable,
        retry_after_s=wait,
    )


def transport_error(provider: str, model: str, error: httpx.HTTPError) -> ProviderError:
    """A retryable error for a request that got no answer (refused, reset, timed out)."""
    kind = type(error).__name__
    return ProviderError(
        f"{provider} could not be reached for model {model!r}: {kind}: {error}",
        provider=provider,
        status=None,
        code=FailCode.ENGINE_UNAVAILABLE,
        retryable=True,
    )


def bad_answer(provider: str, model: str, problem: str) -> ProviderError:
    """A 2xx answer we cannot use (malformed JSON, no mask, not an image): retryable."""
    return ProviderError(
        f"{provider} gave an unusable answer for model {model!r}: {problem}",
        provider=provider,
        status=None,
        code=FailCode.ENGINE_FAILED,
        retryable=True,
    )


def encode_png(image: Image.Image) -> bytes:
    """`image` as PNG bytes (fast compression: the bytes only travel to the provider)."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """An image from bytes, fully loaded; ValueError when it is not one."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"not an image: {error}") from None


def decode_base64_image(text: str) -> Image.Image:
    """An image from base64 text, with or without a `data:...;base64,` prefix."""
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"not base64: {error}") from None
    return decode_image(raw)


def alpha_of(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The matte in an answer image: its alpha when it has one, else its grey levels.

    Resized (Lanczos) to `size` when the provider answered at another size. A colour
    image without alpha (a photo, not a cut-out or a mask) is no matte: ValueError.
    """
    if image.mode in {"RGBA", "LA", "PA"} or "transparency" in image.info:
        matte = image.convert("RGBA").getchannel("A")
    elif image.mode in _GREY_MODES:
        matte = image.convert("L")
    else:
        matte = _grey_levels(image.convert("RGB"))
    return matte if matte.size == size else matte.resize(size, Image.Resampling.LANCZOS)


#: Single-channel modes whose levels are a matte as they are.
_GREY_MODES: Final = frozenset({"1", "L", "I", "I;16", "F"})
#: How far apart an RGB mask's channels may be (compression noise) and still be grey.
_GREY_TOLERANCE: Final = 8


def _grey_levels(rgb: Image.Image) -> Image.Image:
    """The grey levels of an RGB image whose channels agree; ValueError for a colour one."""
    red, green, blue = rgb.split()
    for one, other in ((red, green), (green, blue)):
        apart = ImageChops.difference(one, other).point(lambda v: 255 if v > _GREY_TOLERANCE else 0)
        if apart.getbbox() is not None:
            raise ValueError("a colour image without alpha is not a matte")
    return rgb.convert("L")


def matte_of(provider: str, model: str, image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`alpha_of`, with an unusable answer image as a `bad_answer` error."""
    try:
        return alpha_of(image, size)
    except ValueError as error:
        raise bad_answer(provider, model, str(error)) from None


def json_body(provider: str, model: str, response: httpx.Response) -> Any:
    """The JSON of a 2xx answer, or a `bad_answer` error."""
    try:
        return response.json()
    except ValueError as error:
        raise bad_answer(provider, model, f"not JSON: {error}") from None


def headers_of(token: str, *, scheme: str = "Bearer") -> Mapping[str, str]:
    """An Authorization header."""
    return {"Authorization": f"{scheme} {token}"}
