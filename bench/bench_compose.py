"""Benchmark: the edge-colour estimate and the compose step on real photos.

Run: `python bench/bench_compose.py` (from the repository root, with the project's
virtualenv; needs scikit-image for the photos). For scikit-image's astronaut, coffee,
chelsea and rocket, each under two mattes (the fake engine's, which is soft almost
everywhere, and a feathered ellipse, soft only along its edge), it measures in turn,
interleaved, the process CPU time of:

- `full_size`: the blur-fusion estimate with both passes at full size (the paper's way,
  what `matting.estimate_foreground` did before it ran them on reduced copies);
- `estimate`: `matting.estimate_foreground` as shipped;
- `compose` / `compose_plain`: `imaging.compose` to PNG with and without the estimate;
- `bare_pillow`: decode, the fake matte, RGBA, PNG (bench B2's baseline loop).

Columns: `full/est` is the speed-up of the estimate; `before/bare` and `compose/bare`
are the compose step alone (no decode, no matte) with the full-size and the shipped
estimate, over the whole bare loop; `plain/bare` the same without any estimate.

CPU time, not wall time, so that other tenants of a loaded machine move the numbers
less; each figure is the median of `--rounds`. It prints a table with the ratios and
the estimate's difference from `full_size` at soft pixels (0..255), and writes
`bench/latest-compose.json`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lumiku_bgremover import matting
from lumiku_bgremover.contracts.common import OutputOptions
from lumiku_bgremover.engines.fake import fake_matte
from lumiku_bgremover.imaging import compose, decode

REPORT = Path(__file__).with_name("latest-compose.json")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def full_size(image: Image.Image, alpha: Image.Image) -> Image.Image:
    """Both blur-fusion passes at full size, soft pixels replaced (the old estimate)."""
    rgb = np.moveaxis(np.asarray(image, dtype=np.float32) / 255, -1, 0)
    a = np.asarray(alpha, dtype=np.float32) / 255
    fore = back = rgb
    for radius in matting.RADII:
        fore_mean, back = matting._means(fore, back, a, radius)  # noqa: SLF001
        fore = matting._estimate(rgb, fore_mean, back, a)  # noqa: SLF001
    levels = np.asarray(alpha)
    soft = ((levels > 0) & (levels < 255))[..., np.newaxis]
    out = np.where(soft, np.moveaxis(np.clip(fore * 255 + 0.5, 0, 255), 0, -1), image)
    return Image.fromarray(out.astype(np.uint8), "RGB")


def ellipse(image: Image.Image) -> Image.Image:
    width, height = image.size
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).ellipse((width // 5, height // 10, 4 * width // 5, height - 5), 255)
    return mask.filter(ImageFilter.GaussianBlur(3))


def bare_pillow(blob: bytes) -> None:
    image = Image.open(io.BytesIO(blob)).convert("RGB")
    rgba = image.convert("RGBA")
    rgba.putalpha(fake_matte(image))
    rgba.save(io.BytesIO(), "PNG")


def cpu_ms(func: Callable[[], object]) -> float:
    started = time.process_time()
    func()
    return (time.process_time() - started) * 1000


def case_variants(image: Image.Image, matte: Image.Image) -> dict[str, Callable[[], object]]:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    blob = buffer.getvalue()
    decoded = decode(blob, max_pixels=50_000_000)
    options = OutputOptions()
    return {
        "full_size": lambda: full_size(image, matte),
        "estimate": lambda: matting.estimate_foreground(image, matte),
        "compose": lambda: compose(decoded, matte, options),
        "compose_plain": lambda: compose(decoded, matte, options, edge_colour=False),
        "bare_pillow": lambda: bare_pillow(blob),
    }


def difference(image: Image.Image, matte: Image.Image) -> dict[str, float]:
    levels = np.asarray(matte)
    soft = (levels > 0) & (levels < 255)
    new = np.asarray(matting.estimate_foreground(image, matte), dtype=np.int16)
    old = np.asarray(full_size(image, matte), dtype=np.int16)
    error = np.abs(new - old)[soft]
    changed = np.abs(old - np.asarray(image, dtype=np.int16))[soft]
    return {"soft_fraction": float(soft.mean()), "mean_abs_diff": float(error.mean()),
            "p99_abs_diff": float(np.percentile(error, 99)),
            "full_size_change_mean": float(changed.mean())}  # fmt: skip


def measure(rounds: int) -> dict[str, dict[str, object]]:
    from skimage import data  # noqa: PLC0415

    results: dict[str, dict[str, object]] = {}
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)()[:, :, :3]).convert("RGB")
        for kind, matte in (("fake", fake_matte(image)), ("ellipse", ellipse(image))):
            variants = case_variants(image, matte)
            samples: dict[str, list[float]] = {v: [] for v in variants}
            for index in range(rounds):
                order = (
                    list(variants)[index % len(variants) :]
                    + list(variants)[: index % len(variants)]
                )
                for variant in order:
                    samples[variant].append(cpu_ms(variants[variant]))
            medians = {v: statistics.median(s) for v, s in samples.items()}
            results[f"{name}/{kind}"] = {"cpu_ms": medians, **difference(image, matte)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load = [round(value, 2) for value in os.getloadavg()]
    results = measure(args.rounds)
    print(f"load average before: {load}, after: {[round(v, 2) for v in os.getloadavg()]}")
    header = ("case", "full/est", "before/bare", "compose/bare", "plain/bare", "diff", "p99")
    print("{:18} {:>8} {:>11} {:>12} {:>10} {:>5} {:>4}".format(*header))
    totals = dict.fromkeys(("full_size", "estimate", "compose", "bare_pillow"), 0.0)
    for case, result in results.items():
        ms: dict[str, float] = result["cpu_ms"]  # type: ignore[assignment]
        for key in totals:
            totals[key] += ms[key]
        before = ms["compose"] - ms["estimate"] + ms["full_size"]
        print(f"{case:18} {ms['full_size'] / ms['estimate']:8.2f} "
              f"{before / ms['bare_pillow']:11.2f} {ms['compose'] / ms['bare_pillow']:12.2f} "
              f"{ms['compose_plain'] / ms['bare_pillow']:10.2f} "
              f"{result['mean_abs_diff']:5.2f} {result['p99_abs_diff']:4.0f}")  # fmt: skip
    before = totals["compose"] - totals["estimate"] + totals["full_size"]
    summary = {"full_size_over_estimate": totals["full_size"] / totals["estimate"],
               "compose_before_over_bare_pillow": before / totals["bare_pillow"],
               "compose_over_bare_pillow": totals["compose"] / totals["bare_pillow"]}  # fmt: skip
    print(json.dumps(summary))
    REPORT.write_text(json.dumps({"load_average": load, "summary": summary, "cases": results},
                                 indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
