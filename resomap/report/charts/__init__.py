"""Study charts. Each chart is a matplotlib Figure built without pyplot, so no backend or global
state is involved; this module holds what the charts share: colours, the resolution axis, saving."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pandas as pd
from matplotlib import colormaps, colors, ticker
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from PIL import Image

from resomap.core import io

DPI = 110


def save_figure(fig: Figure, path: Path, palette: int | None = None) -> None:
    """Atomic, and without the 'Software' tag (it names the matplotlib version): same chart, same bytes.
    With `palette`, reduced to that many colours (no dithering): a chart of many photos then takes
    about a quarter of the bytes, which the self-contained report pays in base64."""
    with io.atomic_open(path, "wb") as f:
        if palette is None:
            fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None})
            return
        drawn = BytesIO()
        fig.savefig(drawn, format="png", dpi=DPI, metadata={"Software": None})
        image = Image.open(drawn).convert("RGB")
        image.quantize(palette, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(f, format="PNG", optimize=True)


def model_colors(models: list[str]) -> dict[str, str]:
    """One colour per model, assigned in the given order, so a model looks the same in every chart."""
    palette = colormaps["tab10"].colors
    return {model: colors.to_hex(palette[i % len(palette)]) for i, model in enumerate(models)}


def models_in(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["model"]))


def by_model(frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each model's rows sorted by resolution, models in order of first appearance."""
    for model in models_in(frame):
        yield model, frame[frame["model"] == model].sort_values("resolution")


def resolution_axis(ax: Axes, resolutions: list[int]) -> None:
    """Grids double the resolution: a log2 axis spaces them evenly; ticks name the real pixel sizes."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(resolutions, [str(r) for r in resolutions])
    ax.minorticks_off()
    ax.set_xlabel("resolution (px)")


def plain_log_ticks(axis: Axis) -> None:
    """Log-axis ticks at 1, 2, 5 x 10^n labelled as plain numbers: a log axis over less than a decade
    would otherwise show one label, or labels like 6×10⁻¹."""
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_minor_locator(ticker.LogLocator(subs=(2, 5)))
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)


def model_lines(ax: Axes, frame: pd.DataFrame, column: str, labels: dict[str, str] | None = None,
                band: tuple[str, str] | None = None) -> None:
    """`column` vs resolution, one line per model, with an optional shaded (low, high) band."""
    palette = model_colors(models_in(frame))
    for model, rows in by_model(frame):
        x, color = rows["resolution"], palette[model]
        ax.plot(x, rows[column], marker="o", color=color, label=labels[model] if labels else model)
        if band:
            ax.fill_between(x, rows[band[0]], rows[band[1]], color=color, alpha=0.2, linewidth=0)
    resolution_axis(ax, sorted(frame["resolution"].unique()))


def not_available(ax: Axes, text: str) -> None:
    """Say why a panel is empty: blank axes would read as 'zero' or as a bug."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35")


def message_figure(text: str) -> Figure:
    fig = Figure(figsize=(6, 2))
    not_available(fig.subplots(), text)
    return fig


def figure_legend(fig: Figure, extra: tuple[Artist, ...] = ()) -> None:
    """One legend below all panels: handles from every axes, one per label, in order of appearance."""
    handles: dict[str, Artist] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    for handle in extra:
        handles.setdefault(handle.get_label(), handle)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(len(handles), 6), frameon=False)
