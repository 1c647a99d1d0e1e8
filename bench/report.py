"""REPORT.md and one PNG per benchmark from latest.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TITLES = {
    "B1": "B1 local engine (IS-Net): images/s vs a bare ONNX Runtime loop and rembg",
    "B2": "B2 plumbing (fake engine): images/s vs a bare Pillow loop",
    "B3": "B3 quotes, 64 concurrent requesters: quotes/s vs bare responders",
    "B4": "B4 memory: worker peak RSS and ZIP growth on a batch of 4 MiB images",
    "B5": "B5 fairness: one image behind another user's batch, in item-times",
    "B6": "B6 scale-out: two worker processes vs one (fake engine, fixed CPU cost)",
}


#: Figures shown under a benchmark's table besides its ratios.
EXTRAS = {"vs_rembg", "matte_mean_abs_diff_max", "matte_iou_min", "p99_ms", "p99_ratio",
          "item_times", "config", "plumbing_ratio", "cores_used"}  # fmt: skip


def plot(name: str, result: dict[str, Any], folder: Path) -> str | None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ratios = result.get("ratios")
    if not ratios:
        return None
    figure, axes = plt.subplots(figsize=(6, 3))
    axes.barh(list(ratios), list(ratios.values()), color="#4a7bd0")
    axes.axvline(1.0, color="grey", linewidth=0.8)
    axes.set_xlabel(f"ratio to {result.get('baseline', 'baseline')} (median of rounds)")
    axes.set_title(TITLES[name], fontsize=8)
    for index, value in enumerate(ratios.values()):
        axes.text(value, index, f" {value:.2f}", va="center", fontsize=8)
    figure.tight_layout()
    path = folder / f"{name.lower()}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def table(result: dict[str, Any]) -> list[str]:
    if "error" in result:
        return [f"**failed**: `{result['error']}`", ""]
    medians = result.get("medians")
    if not medians:
        skip = {"ratios", "goal", "met", "seconds", "load_before", "load_after", "config", "unit"}
        return [*(f"- {k}: {_fmt(v)}" for k, v in result.items() if k not in skip), ""]
    rows = [f"| variant | median {result['unit']} | samples | ratio to {result['baseline']} |",
            "|---|---|---|---|"]  # fmt: skip
    for name, median in medians.items():
        samples = ", ".join(f"{v:.3g}" for v in result["samples"][name])
        rows.append(f"| {name} | {median:.3g} | {samples} | {result['ratios'][name]:.2f} |")
    extra = {k: v for k, v in result.items() if k in EXTRAS}
    return [*rows, "", *(f"- {k}: {_fmt(v)}" for k, v in extra.items()), ""]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def header(data: dict[str, Any]) -> list[str]:
    m = data["machine"]
    command = "make bench QUICK=1" if data["mode"] == "quick" else "make bench"
    return [
        "# Benchmarks (issue 12)",
        "",
        (
            f"Generated {data['generated']} by `{command}` ({data['mode']}, {data['seconds']} s)."
            " Every figure is a ratio against a baseline measured in the same run, variants"
            " interleaved, medians of the rounds."
        ),
        "",
        (
            f"- machine: {m['cpu']}, {m['cores']} cores, AVX-512 VNNI {m['avx512_vnni']},"
            f" Python {m['python']}, kernel {m['kernel']}"
        ),
        f"- versions: {_fmt(m['versions'])}",
        (
            f"- load average (1, 5, 15 min) at start {data['load_average_at_start']},"
            f" at end {data['load_average_at_end']}; before each benchmark in the table"
        ),
        "",
        "| benchmark | goal | met | load before |",
        "|---|---|---|---|",
    ]


def write_report(data: dict[str, Any], path: Path, folder: Path) -> None:
    lines = header(data)
    for name, result in data["benchmarks"].items():
        met = "yes" if result.get("met") else "**no**"
        goal, load = result.get("goal", "-"), result.get("load_before")
        lines.append(f"| {name} | {goal} | {met} | {load} |")
    lines.append("")
    for name, result in data["benchmarks"].items():
        lines += [f"## {TITLES[name]}", "", *table(result)]
        image = plot(name, result, folder)
        if image:
            lines += [f"![{name}](results/{image})", ""]
    notes = path.with_name("NOTES.md")
    if notes.exists():
        lines += ["", notes.read_text()]
    path.write_text("\n".join(lines) + "\n")
