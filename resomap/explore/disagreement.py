"""Where resolutions disagree: the test images whose prediction changes most across a model's
resolutions, from the evaluate stage's predictions (the same image index at every resolution)."""

from __future__ import annotations

import pandas as pd


def disagreements(predictions: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """One row per test image: its true class, the class predicted at each resolution, how many
    different classes were predicted and at how many resolutions it was right; most disagreeing
    first (then fewest right, then index)."""
    resolutions = sorted(predictions)
    by_image = {r: predictions[r].sort_values("index").reset_index(drop=True) for r in resolutions}
    first = by_image[resolutions[0]]
    table = pd.DataFrame({"index": first["index"], "true class": first["actual"]})
    for r in resolutions:
        table[f"{r} px"] = by_image[r]["predicted"].to_numpy()
    predicted = table[[f"{r} px" for r in resolutions]]
    table["classes predicted"] = predicted.nunique(axis=1)
    table["right at"] = sum(by_image[r]["correct"].astype(int).to_numpy() for r in resolutions)
    return table.sort_values(["classes predicted", "right at", "index"], ascending=[False, True, True]).reset_index(drop=True)
