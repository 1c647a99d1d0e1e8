"""Pure rules of intake: what a request may ask, which of its images can run, what it costs.

What the request itself gets wrong (too many images, a declared size over the
limit, a source outside the user's reach) refuses the whole request. A source
that turns out missing or too large when it is checked fails that image alone:
it is stored failed at once, announced with `bgremove.item.failed`, and not
charged; the batch is priced on the images that can run. A request none of
whose images can run is refused (`no_runnable_images`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lumiku_bgremover import pricing
from lumiku_bgremover.contracts import BatchRequested, ImageInput, ImageRequested, RejectCode
from lumiku_bgremover.contracts.codes import FailCode
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.settings import Limits

Request = BatchRequested | ImageRequested


class Rejection(Exception):  # noqa: N818 - reads as what it is: the refusal of a request
    """A request is refused with a machine-readable code; nothing is charged."""

    def __init__(self, code: RejectCode, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.path = code, message, path


@dataclass(frozen=True, slots=True)
class SourceFailure:
    """Why one image cannot run, found when its source was checked."""

    code: FailCode
    message: str


#: What checking one source found: its size in bytes (None: known only once fetched),
#: or why it cannot run.
SourceCheck = int | None | SourceFailure


@dataclass(frozen=True, slots=True)
class Admission:
    """The images that run, those that failed at intake (by index), and the price."""

    runnable: tuple[int, ...]
    failures: Mapping[int, SourceFailure]
    quote: pricing.BatchQuote


def images_of(request: Request) -> tuple[ImageInput, ...]:
    """The request's images, one for a single-image request."""
    return request.images if isinstance(request, BatchRequested) else (request.image,)


def image_path(request: Request, index: int) -> str:
    """The JSON path of one image of the request."""
    return f"$.images[{index}]" if isinstance(request, BatchRequested) else "$.image"


def lane_for(request: Request, limits: Limits) -> Lane:
    """Single images and small batches go in the interactive lane."""
    small = len(images_of(request)) <= limits.interactive_max_images
    return Lane.INTERACTIVE if small else Lane.BULK


def check_request(request: Request, limits: Limits) -> None:
    """What the request itself says: image count and declared sizes; raises `Rejection`."""
    images = images_of(request)
    if len(images) > limits.max_images:
        raise Rejection(
            RejectCode.TOO_MANY_IMAGES,
            f"{len(images)} images; the limit is {limits.max_images}",
            "$.images",
        )
    for index, image in enumerate(images):
        if (image.size_bytes or 0) > limits.max_image_bytes:
            raise Rejection(
                RejectCode.IMAGE_TOO_LARGE,
                f"image {index} declares {image.size_bytes} bytes; "
                f"the limit is {limits.max_image_bytes}",
                f"{image_path(request, index)}.size_bytes",
            )
    _check_total(sum(image.size_bytes or 0 for image in images), limits)


def _check_total(total: int, limits: Limits) -> None:
    if total > limits.max_batch_bytes:
        raise Rejection(
            RejectCode.BATCH_TOO_LARGE,
            f"the batch is {total} bytes; the limit is {limits.max_batch_bytes}",
            "$.images",
        )


def judge_size(size: int | None, limits: Limits) -> SourceCheck:
    """A stored object over the per-image limit cannot run; any other size can."""
    if size is not None and size > limits.max_image_bytes:
        return SourceFailure(
            FailCode.SOURCE_TOO_LARGE,
            f"the image is {size} bytes; the limit is {limits.max_image_bytes}",
        )
    return size


def admit(request: Request, checks: Sequence[SourceCheck], limits: Limits) -> Admission:
    """Split the images into runnable and failed, and price the runnable ones.

    Raises `Rejection` when none can run, or when the runnable ones add up to more
    than the batch limit.
    """
    images = images_of(request)
    failures = {i: c for i, c in enumerate(checks) if isinstance(c, SourceFailure)}
    runnable = tuple(i for i in range(len(images)) if i not in failures)
    if not runnable:
        path = "$.images" if isinstance(request, BatchRequested) else "$.image.ref"
        raise Rejection(RejectCode.NO_RUNNABLE_IMAGES, _why_none(request, failures), path)
    sizes = (max(_size(checks[i]), images[i].size_bytes or 0) for i in runnable)
    _check_total(sum(sizes), limits)
    quote = pricing.quote_batch(
        request.tier, len(runnable), max_images=max(limits.max_images, len(runnable))
    )
    return Admission(runnable, failures, quote)


def _size(check: SourceCheck) -> int:
    return check if isinstance(check, int) else 0


def _why_none(request: Request, failures: Mapping[int, SourceFailure]) -> str:
    reasons = "; ".join(
        f"{image_path(request, i)}: {f.code} ({f.message})" for i, f in sorted(failures.items())
    )
    return f"no image can run: {reasons}"
