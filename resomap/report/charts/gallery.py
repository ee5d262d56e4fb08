"""The most confident error of each class at each resolution, with its Grad-CAM overlay and what the
other resolutions make of the same test image."""

from __future__ import annotations

from matplotlib.figure import Figure

from resomap.report.charts import message_figure

TILE = 1.15  # inches per tile: small, the report embeds one chart per model


def confident_errors_chart(model: str, views: dict[str, dict[int, dict | None]], resolutions: list[int]) -> Figure:
    """Rows are true classes, columns resolutions: each tile the class's most confident wrong test
    image at that resolution (overlay of the predicted class's Grad-CAM), captioned with its index,
    the predicted class, the confidence and whether the other resolutions get it right."""
    if not views:
        return message_figure(f"{model}: no gallery")
    resolutions = sorted(resolutions)
    fig = Figure(figsize=(TILE * len(resolutions) + 1.4, (TILE + 0.42) * len(views) + 0.5), layout="compressed")
    axes = fig.subplots(len(views), len(resolutions), squeeze=False)
    for r, (name, by_resolution) in enumerate(views.items()):
        for c, resolution in enumerate(resolutions):
            ax, view = axes[r, c], by_resolution.get(resolution)
            ax.set_xticks([])
            ax.set_yticks([])
            heading = f"{resolution} px\n" if r == 0 else ""
            if view is None:
                ax.text(0.5, 0.5, "no wrong image", ha="center", va="center", transform=ax.transAxes, fontsize=6, color="0.35")
                ax.set_aspect("equal")
                ax.set_title(heading, fontsize=5.5, pad=2)
            else:
                ax.imshow(view["overlay"], interpolation="nearest")
                ax.set_title(heading + view["caption"], fontsize=5.5, pad=2)
        axes[r, 0].set_ylabel(f"true: {name}", fontsize=6.5)
    fig.suptitle(f"{model}: most confident wrong test image per class and resolution", fontsize=9)
    return fig
