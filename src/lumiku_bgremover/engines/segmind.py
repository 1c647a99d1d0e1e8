"""The Segmind engine: `POST {endpoint}/v1/{name}` with `x-api-key`, image bytes back.

The request is JSON with the image as base64 (`{"image": ..., "base64": false}`), or,
given an `ImageLinker` (SEGMIND_IMAGE_TRANSPORT=url), as the presigned URL of a
short-lived copy in our object store, which Segmind fetches and the linker deletes
after the call (see `engines.links`). The answer is the cut-out as image bytes
(RGBA), whose alpha becomes the matte (a JSON answer `{"image": <base64>}` is read
too). Endpoint names per model are configuration (SEGMIND_MODELS); a model not listed
is sent under its own name.

Errors follow `engines.hosted`: 401/403 not servable, 406 out of credits (or a spend
limit; retryable once topped up), 429 rate limited (Segmind sends no Retry-After but
`x-rate-limit-reset-at-utc`, honoured the same way), 5xx retryable.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import httpx
from PIL import Image

from lumiku_bgremover.engines.base import check_matte
from lumiku_bgremover.engines.hosted import (
    ProviderError,
    bad_answer,
    decode_base64_image,
    decode_image,
    encode_png,
    matte_of,
    provider_error,
    transport_error,
)
from lumiku_bgremover.engines.links import ImageLinker

__all__ = ["SegmindEngine", "reset_in"]

#: Segmind's rate-limit header: when the current window ends (UTC).
RESET_HEADER: Final = "x-rate-limit-reset-at-utc"


def reset_in(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds until an ISO 8601 (or epoch seconds) reset time; None when unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        when = datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class SegmindEngine:
    """Background removal on Segmind's serverless API."""

    name = "segmind"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        endpoint: str,
        models: Mapping[str, str] | None = None,
        links: ImageLinker | None = None,
    ) -> None:
        self._client, self._endpoint = client, endpoint.rstrip("/")
        self._headers = {"x-api-key": api_key, "Accept": "image/*, application/json"}
        self._models = dict(models or {})
        self._links = links

    @property
    def transport(self) -> str:
        """How the image travels: "url" (given a linker) or "base64"."""
        return "base64" if self._links is None else "url"

    def endpoint_for(self, model: str) -> str:
        """The URL serving `model`."""
        return f"{self._endpoint}/v1/{self._models.get(model, model)}"

    async def matte(self, image: Image.Image, *, model: str) -> Image.Image:
        """The matte of `image` by `model`; raises `ProviderError` on any failure."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        png = await asyncio.to_thread(encode_png, rgb)
        if self._links is None:
            response = await self._post(model, base64.b64encode(png).decode("ascii"))
        else:
            async with self._links.link(png, content_type="image/png") as url:
                response = await self._post(model, url)
        if response.is_error:
            raise self._error(model, response)
        cut_out = await asyncio.to_thread(self._image, response, model)
        matte = await asyncio.to_thread(matte_of, self.name, model, cut_out, rgb.size)
        return check_matte(matte, rgb.size, self.name)

    async def _post(self, model: str, image: str) -> httpx.Response:
        """The answer to `image` (base64 or a URL); the body is read before it returns."""
        body = {"image": image, "base64": False}
        url = self.endpoint_for(model)
        try:
            return await self._client.post(url, json=body, headers=self._headers)
        except httpx.HTTPError as error:
            raise transport_error(self.name, model, error) from error

    def _error(self, model: str, response: httpx.Response) -> ProviderError:
        error = provider_error(self.name, model, response)
        if error.retry_after_s is None:
            error.retry_after_s = reset_in(response.headers.get(RESET_HEADER))
        return error

    def _image(self, response: httpx.Response, model: str) -> Image.Image:
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                return decode_base64_image(_json_image(response))
            return decode_image(response.content)
        except ValueError as error:
            raise bad_answer(self.name, model, str(error)) from None


def _json_image(response: httpx.Response) -> str:
    """The base64 image of a JSON answer; ValueError when there is none."""
    answer = response.json()
    encoded = answer.get("image") if isinstance(answer, dict) else None
    if not isinstance(encoded, str):
        raise ValueError("a JSON answer without an image")  # noqa: TRY004 - a bad answer, not a bug
    return encoded
