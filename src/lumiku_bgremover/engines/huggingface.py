"""The Hugging Face engine: hf-inference, or an inference provider through the router.

Two routes, chosen per model by `providers` (configuration, HF_PROVIDER_MODELS):

- **hf-inference** (RMBG-1.4): `POST {endpoint}/models/{model}` with the image bytes
  and a bearer token. The answer is JSON `[{"label", "score", "mask"}]`, `mask` a
  base64 single-channel PNG (not image bytes). 503 with `{"error", "estimated_time"}`
  while the model loads: retryable after `estimated_time`.
- **a provider** (RMBG-2.0 on fal): submit `POST {router}/{provider}/{model_id}?_subdomain=queue`
  with `{"image_url": <data URL>, "sync_mode": true}`; the answer names the request
  (`request_id`, `status`, `response_url`). Poll `{router}/{provider}{path}/status`
  until `COMPLETED`, then `GET {router}/{provider}{path}` gives `{"image": {"url"}}`,
  a data URL (sync mode) or a link to the cut-out, whose alpha is the matte.

The client is injected (its connection pool is shared, its lifetime the caller's);
the bearer token is only ever sent to the configured endpoint and router.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from PIL import Image, ImageChops

from lumiku_bgremover.engine_settings import ProviderModel
from lumiku_bgremover.engines.base import check_matte
from lumiku_bgremover.engines.hosted import (
    alpha_of,
    bad_answer,
    decode_base64_image,
    decode_image,
    encode_png,
    json_body,
    matte_of,
    provider_error,
    transport_error,
)
from lumiku_bgremover.engines.resilience import Sleep

__all__ = ["HuggingFaceEngine"]

#: Seconds between status polls of a provider's queue.
POLL_INTERVAL_S: Final = 0.5
_QUEUE: Final = {"_subdomain": "queue"}
_DONE: Final = "COMPLETED"
_FAILED: Final = frozenset({"FAILED", "ERROR", "CANCELLED"})
_BACKGROUND: Final = frozenset({"background", "bg"})


class HuggingFaceEngine:
    """Background removal on Hugging Face (see the module docstring for the routes)."""

    name = "huggingface"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        token: str,
        endpoint: str,
        router: str,
        providers: Mapping[str, ProviderModel] | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._client, self._endpoint, self._router = (
            client,
            endpoint.rstrip("/"),
            router.rstrip("/"),
        )
        self._auth = {"Authorization": f"Bearer {token}"}
        self._providers = dict(providers or {})
        self._poll, self._sleep = poll_interval_s, sleep

    def provider_of(self, model: str) -> str:
        """Who runs `model`: "hf-inference", or the inference provider it is routed to."""
        route = self._providers.get(model)
        return route.provider if route is not None else "hf-inference"

    async def matte(self, image: Image.Image, *, model: str) -> Image.Image:
        """The matte of `image` by `model`; raises `ProviderError` on any failure."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        png = await asyncio.to_thread(encode_png, rgb)
        provider = self._providers.get(model)
        if provider is None:
            answer = await self._hf_inference(png, model)
            matte = await asyncio.to_thread(_mask_of_segments, answer, model, rgb.size)
        else:
            cut_out = await self._through_provider(png, model, provider)
            matte = await asyncio.to_thread(matte_of, self.name, model, cut_out, rgb.size)
        return check_matte(matte, rgb.size, self.name)

    async def _hf_inference(self, png: bytes, model: str) -> Any:
        headers = {**self._auth, "Content-Type": "image/png", "Accept": "application/json"}
        response = await self._send("POST", f"{self._endpoint}/models/{model}", model,
                                    content=png, headers=headers)  # fmt: skip
        return json_body(self.name, model, response)

    async def _through_provider(self, png: bytes, model: str, route: ProviderModel) -> Image.Image:
        base = f"{self._router}/{route.provider}"
        data_url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        submitted = json_body(
            self.name, model,
            await self._send("POST", f"{base}/{route.model_id}", model, params=_QUEUE,
                             json={"image_url": data_url, "sync_mode": True}, headers=self._auth),
        )  # fmt: skip
        path = _request_path(submitted, model)
        await self._until_done(f"{base}{path}/status", model, str(submitted.get("status", "")))
        result = json_body(self.name, model, await self._send(
            "GET", f"{base}{path}", model, params=_QUEUE, headers=self._auth))  # fmt: skip
        return await self._image_of(result, model)

    async def _until_done(self, status_url: str, model: str, status: str) -> None:
        while status != _DONE:
            if status in _FAILED:
                raise bad_answer(self.name, model, f"the provider's request ended {status}")
            await self._sleep(self._poll)
            answer = json_body(self.name, model, await self._send(
                "GET", status_url, model, params=_QUEUE, headers=self._auth))  # fmt: skip
            status = str(answer.get("status", "")) if isinstance(answer, dict) else ""

    async def _image_of(self, result: Any, model: str) -> Image.Image:
        image = result.get("image") if isinstance(result, dict) else None
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str):
            raise bad_answer(self.name, model, "no image.url in the provider's result")
        try:
            if url.startswith("data:"):
                return await asyncio.to_thread(decode_base64_image, url)
            response = await self._send("GET", url, model)  # a file link: no token sent
            return await asyncio.to_thread(decode_image, response.content)
        except ValueError as error:
            raise bad_answer(self.name, model, str(error)) from None

    async def _send(self, method: str, url: str, model: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise transport_error(self.name, model, error) from error
        if response.is_error:
            raise provider_error(self.name, model, response)
        return response


def _request_path(submitted: Any, model: str) -> str:
    """The path naming a queued request, from its `response_url`."""
    url = submitted.get("response_url") if isinstance(submitted, dict) else None
    path = urlsplit(url).path.rstrip("/") if isinstance(url, str) else ""
    if not path or not submitted.get("request_id"):
        raise bad_answer("huggingface", model, f"no request_id/response_url in {submitted!r:.200}")
    return path


def _mask_of_segments(answer: Any, model: str, size: tuple[int, int]) -> Image.Image:
    """One matte from `[{label, score, mask}]`: the union of the non-background masks."""
    if not isinstance(answer, list) or not answer:
        raise bad_answer("huggingface", model, f"expected a list of segments, got {answer!r:.200}")
    masks: list[Image.Image] = []
    for segment in answer:
        if not isinstance(segment, dict) or not isinstance(segment.get("mask"), str):
            raise bad_answer("huggingface", model, "a segment has no base64 mask")
        if str(segment.get("label", "")).lower() in _BACKGROUND and len(answer) > 1:
            continue
        try:
            masks.append(alpha_of(decode_base64_image(segment["mask"]), size))
        except ValueError as error:
            raise bad_answer("huggingface", model, f"mask: {error}") from None
    if not masks:
        raise bad_answer("huggingface", model, "only background segments")
    union = masks[0]
    for mask in masks[1:]:
        union = ImageChops.lighter(union, mask)
    return union
