"""The bare loops the service is measured against (B1, B2): no messaging, storage or
database, one image at a time, in this process."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lumiku_bgremover.engines.fake import fake_matte
from lumiku_bgremover.engines.local import MODEL_SPECS, postprocess, preprocess

SPEC = MODEL_SPECS["isnet-medium"]


def png_with_alpha(image: Image.Image, matte: Image.Image) -> bytes:
    out = io.BytesIO()
    rgba = image.convert("RGBA")
    rgba.putalpha(matte)
    rgba.save(out, "PNG")
    return out.getvalue()


class OrtLoop:
    """Decode, preprocess, infer (ONNX Runtime defaults), matte, compose, PNG."""

    def __init__(self, model: Path) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def one(self, blob: bytes) -> bytes:
        image = Image.open(io.BytesIO(blob)).convert("RGB")
        output = self.session.run(["output"], {"input": preprocess(image, SPEC)})[0]
        return png_with_alpha(image, postprocess(np.asarray(output), SPEC, image.size))

    def images_per_s(self, blobs: list[bytes]) -> tuple[float, list[bytes]]:
        started = time.perf_counter()
        results = [self.one(blob) for blob in blobs]
        return len(blobs) / (time.perf_counter() - started), results


class RembgLoop:
    """rembg's `remove()` with a reused `dis_custom` session on the same ONNX file."""

    def __init__(self, model: Path) -> None:
        import os  # noqa: PLC0415

        os.environ["U2NET_HOME"] = str(model.parent)  # rembg loads custom models from there
        from rembg import new_session  # noqa: PLC0415

        self.session = new_session("dis_custom", model_path=str(model))

    def images_per_s(self, blobs: list[bytes]) -> float:
        from rembg import remove  # noqa: PLC0415

        started = time.perf_counter()
        for blob in blobs:
            cut = remove(Image.open(io.BytesIO(blob)), session=self.session)
            cut.save(io.BytesIO(), "PNG")
        return len(blobs) / (time.perf_counter() - started)


def pillow_images_per_s(blobs: list[bytes]) -> float:
    """Decode, the fake engine's matte, compose, PNG: the plumbing floor."""
    started = time.perf_counter()
    for blob in blobs:
        image = Image.open(io.BytesIO(blob)).convert("RGB")
        png_with_alpha(image, fake_matte(image))
    return len(blobs) / (time.perf_counter() - started)


def compose_images_per_s(blobs: list[bytes]) -> float:
    """The same loop with the service's own decode and compose (edge colour estimate
    included): what the plumbing (messaging, storage, database) adds on top."""
    from lumiku_bgremover.contracts.common import OutputOptions  # noqa: PLC0415
    from lumiku_bgremover.imaging import compose, decode  # noqa: PLC0415

    started = time.perf_counter()
    for blob in blobs:
        decoded = decode(blob, max_pixels=50_000_000)
        compose(decoded, fake_matte(decoded.image), OutputOptions())
    return len(blobs) / (time.perf_counter() - started)
