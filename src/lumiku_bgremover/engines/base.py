"""The engine interface (image in, alpha matte out) and the errors engines raise.

Engines never composite or encode: `imaging.py` turns a matte into every output
option, so all engines offer the same ones.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from PIL import Image

from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.envparse import SettingsError

__all__ = [
    "Engine",
    "EngineConfigError",
    "EngineError",
    "ModelNotFound",
    "check_matte",
]


@runtime_checkable
class Engine(Protocol):
    """Removes backgrounds: an RGB image in, its alpha matte out.

    `matte` returns a mode "L" image of exactly the input's size (255 = subject,
    0 = background); engines that work at another resolution resize back. It raises
    `EngineError` (or a subclass) for anything that went wrong with this image.
    """

    name: str

    async def matte(self, image: Image.Image, *, model: str) -> Image.Image:
        """The alpha matte of `image` computed with `model`."""
        ...


class EngineError(Exception):
    """An engine could not produce a matte for one image.

    `code` is the item's `FailCode` (`engine_failed` when the engine answered with
    an error for this image, `engine_unavailable` when no engine could take it);
    `retryable` says whether trying the same image again later may succeed.
    `ours` marks trouble on our side of the call (storing the image to lend it by
    URL): it says nothing about the engine, so its circuit breaker ignores it.
    """

    ours: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: FailCode = FailCode.ENGINE_FAILED,
        retryable: bool = False,
    ) -> None:
        if code not in {FailCode.ENGINE_FAILED, FailCode.ENGINE_UNAVAILABLE}:
            raise ValueError(
                f"an engine error's code is engine_failed or engine_unavailable: {code}"
            )
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class ModelNotFound(EngineError):  # noqa: N818 - the name the pipeline expects
    """The engine knows no model by that name (a configuration error, never retried)."""

    def __init__(self, engine: str, model: str, known: list[str] | None = None) -> None:
        hint = f"; known models: {', '.join(sorted(known))}" if known else ""
        super().__init__(
            f"engine {engine!r} has no model {model!r}{hint}",
            code=FailCode.ENGINE_UNAVAILABLE,
            retryable=False,
        )
        self.engine = engine
        self.model = model


class EngineConfigError(SettingsError):
    """Tier routing names an engine or model that cannot be served (found at start-up)."""

    def __init__(self, problem: str) -> None:
        super().__init__("TIER_ROUTING", problem)


def check_matte(matte: Image.Image, size: tuple[int, int], engine: str) -> Image.Image:
    """`matte` if it keeps the engine contract (mode "L", `size`), else an `EngineError`."""
    if matte.mode != "L" or matte.size != size:
        raise EngineError(
            f"engine {engine!r} returned a {matte.mode} matte of {matte.size}, "
            f"expected mode L of {size}",
        )
    return matte
