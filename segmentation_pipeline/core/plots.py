"""The report's plots: matplotlib figures rendered to PNG bytes, without pyplot.

Split from ``core/report.py`` so that the report's text, tables and files load without
matplotlib (about 0.5 s to import); only drawing needs it. Every figure has a fixed size
and explicit margins, and the PNG carries no version stamp, so the same inputs give the
same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segmentation_pipeline.core.forked import ForkedCall, fork_available
from segmentation_pipeline.core.report import (
    FEATURE_LABELS,
    GONE_COLUMN,
    NEW_CUSTOMERS,
    Z_COLUMNS,
    fmt_share,
    gender_counts,
    has_rows,
    ids_as_float,
    is_missing,
    plot_text,
    segment_colour,
    segment_label,
    segment_names,
    selected_mask,
    shorten,
)
from segmentation_pipeline.core.report_inputs import ReportInputs

DPI = 100
# Heatmap colours saturate at this many standard deviations from the customer base.
HEATMAP_Z_LIMIT = 2.5

# Width of one character of tick/legend text, in pixels at DPI (DejaVu Sans 10 pt): segment
# labels measure 7.4-7.7 px per character on average ("6: Older, mid income, moderate
# spending" is 296 px), so 8 keeps the longest ones inside the figure.
CHAR_PX = 8.0


# The plane of the segment scatter when the model did not cluster on exactly two of these.
BUSINESS_PLANE = ("annual_income", "spending_score")
PLANE_FEATURES = ("annual_income", "age", "spending_score")  # x before y
PLANE_WORDS = {"age": "age", "annual_income": "income", "spending_score": "spending"}

# Fixed margins (figure fractions) for plots whose labels do not depend on the input.
PLAIN_MARGINS: dict[str, float] = {"left": 0.12, "right": 0.97, "bottom": 0.13, "top": 0.9}


@dataclass(frozen=True)
class Margins:
    """Subplot margins as figure fractions (explicit: layout engines triple the render time)."""

    left: float = PLAIN_MARGINS["left"]
    right: float = PLAIN_MARGINS["right"]
    bottom: float = PLAIN_MARGINS["bottom"]
    top: float = PLAIN_MARGINS["top"]


def text_margin(labels: Sequence[str], figure_inches: float, extra_px: float = 30) -> float:
    """Figure fraction needed beside the axes for the longest label (estimated, capped)."""
    longest = max((len(label) for label in labels), default=0)
    return min((longest * CHAR_PX + extra_px) / (figure_inches * DPI), 0.55)


def new_figure(width: float, height: float, margins: Margins | None = None) -> Figure:
    """A pyplot-free Agg figure with a fixed size and explicit margins."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    m = margins or Margins()
    fig.subplots_adjust(left=m.left, right=m.right, bottom=m.bottom, top=m.top)
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without the matplotlib version stamp (deterministic bytes)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer, metadata={"Software": None})
    fig.clear()
    return buffer.getvalue()


def render_images(inputs: ReportInputs) -> dict[str, bytes]:
    """All plots of the report as PNG bytes, keyed by short name.

    Drawing is GIL-bound matplotlib work (about 0.1 s a plot), so with a second core every
    other plot is drawn in a forked worker process while this one draws the rest; the bytes
    are the same either way.
    """
    plots = planned_plots(inputs)
    if len(plots) < 2 or not fork_available():
        return draw_plots(plots)
    with ForkedCall(draw_plots, plots[1::2]) as forked:
        drawn = draw_plots(plots[::2])
        drawn.update(forked.result())
    return {name: drawn[name] for name, _ in plots}


def planned_plots(inputs: ReportInputs) -> list[tuple[str, Callable[[], bytes]]]:
    """The report's plots in order, each as (short name, function drawing its PNG)."""
    sample = inputs.customers_sample
    names = segment_names(inputs.profiles)
    plane = segment_plane(inputs.run.get("features") or ())
    plots: list[tuple[str, Callable[[], bytes]]] = [
        ("distributions", partial(plot_distributions, sample)),
        ("gender_mix", partial(plot_gender_mix, sample)),
        ("input_scatter", partial(plot_input_scatter, sample)),
        ("segments", partial(plot_segments, sample, segment_centres(inputs, plane), names, plane)),
        ("segment_sizes", partial(plot_segment_sizes, inputs.profiles)),
        ("profile_heatmap", partial(plot_profile_heatmap, inputs.profiles)),
    ]
    if has_rows(inputs.candidates) and finite(inputs.candidates, "silhouette").any():
        plots.append(("silhouette", partial(plot_silhouette, inputs.candidates)))
    if not elbow_rows(inputs.candidates).empty:
        plots.append(("elbow", partial(plot_elbow, inputs.candidates)))
    if has_rows(inputs.migrations):
        plots.append(("migrations", partial(plot_migrations, inputs.migrations, names)))
    return plots


def draw_plots(plots: Sequence[tuple[str, Callable[[], bytes]]]) -> dict[str, bytes]:
    """PNG bytes of each planned plot, by name."""
    return {name: draw() for name, draw in plots}


def finite(frame: pd.DataFrame, column: str) -> pd.Series:
    """Boolean mask of finite numeric values in a column (False when the column is absent)."""
    if column not in frame.columns:
        return pd.Series(False, index=frame.index)
    values = pd.to_numeric(frame[column], errors="coerce")
    return pd.Series(np.isfinite(values.to_numpy(dtype=float, na_value=np.nan)), frame.index)


def plot_distributions(sample: pd.DataFrame) -> bytes:
    """Histograms of age, income and spending side by side."""
    fig = new_figure(11, 3.2, Margins(left=0.06, right=0.98, bottom=0.1, top=0.88))
    axes = fig.subplots(1, 3, gridspec_kw={"wspace": 0.28})
    for ax, column in zip(axes, ("age", "annual_income", "spending_score"), strict=True):
        values = pd.to_numeric(sample[column], errors="coerce").dropna()
        ax.hist(values, bins=20, color="#486581", edgecolor="white")
        ax.set_title(FEATURE_LABELS[column])
        ax.set_ylabel("Customers")
    return figure_png(fig)


def plot_gender_mix(sample: pd.DataFrame) -> bytes:
    """Customers per gender value (as given in the input)."""
    counts = gender_counts(sample)
    fig = new_figure(5.5, 3.2, Margins(left=0.15, bottom=0.14, top=0.88))
    ax = fig.add_subplot()
    positions = np.arange(len(counts))
    ax.bar(positions, counts.to_numpy(), color="#829ab1")
    ax.set_xticks(positions, [plot_text(shorten(str(v), 12)) for v in counts.index])
    ax.set_ylim(0, counts.max() * 1.15)
    ax.set_ylabel("Customers")
    ax.set_title("Gender mix")
    for x, count in zip(positions, counts.to_numpy(), strict=True):
        ax.annotate(f"{count:,}", (x, count), ha="center", va="bottom", fontsize=9)
    return figure_png(fig)


def scatter_axes(ax: Axes, plane: tuple[str, str] = BUSINESS_PLANE) -> None:
    """Axis labels of a scatter plane (income x spending unless told)."""
    ax.set_xlabel(FEATURE_LABELS[plane[0]])
    ax.set_ylabel(FEATURE_LABELS[plane[1]])
    ax.grid(alpha=0.3)


def plot_input_scatter(sample: pd.DataFrame) -> bytes:
    """All customers on the income x spending plane, before segmentation."""
    fig = new_figure(6.5, 4.8, Margins(left=0.12, bottom=0.11, top=0.92))
    ax = fig.add_subplot()
    ax.scatter(sample["annual_income"], sample["spending_score"], s=12, c="#486581", alpha=0.6)
    scatter_axes(ax)
    ax.set_title("Income x spending (input)")
    return figure_png(fig)


def segment_plane(features: Sequence[str]) -> tuple[str, str]:
    """The two features the segment scatter is drawn on: the model's own two when it
    clustered on two of age, income and spending (so the picture shows what separates the
    segments), otherwise income x spending, the business plane."""
    chosen = [f for f in PLANE_FEATURES if f in features]
    return (chosen[0], chosen[1]) if len(chosen) == 2 and len(features) == 2 else BUSINESS_PLANE


def segment_centres(inputs: ReportInputs, plane: tuple[str, str]) -> pd.DataFrame:
    """Segment centres on the plane, as columns segment_id, x, y and ``is_centroid``.

    Model centroids when the model used both features of the plane, otherwise the segment
    means from the profiles (the model's centroids then live in another space).
    """
    centroids = inputs.centroids
    x, y = plane
    if {"segment_id", x, y} <= set(centroids.columns):
        frame = centroids[["segment_id", x, y]].set_axis(["segment_id", "x", "y"], axis=1)
        return frame.assign(is_centroid=True)
    profiles = inputs.profiles
    return pd.DataFrame(
        {
            "segment_id": profiles["segment_id"],
            "x": profiles[f"avg_{x}"],
            "y": profiles[f"avg_{y}"],
            "is_centroid": False,
        }
    )


def plot_segments(
    sample: pd.DataFrame,
    centres: pd.DataFrame,
    names: Mapping[int, str],
    plane: tuple[str, str] = BUSINESS_PLANE,
) -> bytes:
    """The main picture: customers coloured by segment, centres (or means) marked with an X."""
    x, y = plane
    segment_ids = ids_as_float(sample["segment_id"])
    ids = sorted(set(segment_ids.dropna().astype(int)) | set(names))
    labels = [plot_text(shorten(segment_label(sid, names), 44)) for sid in ids]
    legend_room = text_margin(labels, 10, extra_px=50)
    fig = new_figure(10, 5.6, Margins(left=0.07, right=0.98 - legend_room, bottom=0.1, top=0.93))
    ax = fig.add_subplot()
    for sid, label in zip(ids, labels, strict=True):
        members = sample[segment_ids == sid]
        ax.scatter(members[x], members[y], s=14, alpha=0.7, color=segment_colour(sid), label=label)
    mark_centres(ax, centres)
    scatter_axes(ax, plane)
    marked = "centre" if centres["is_centroid"].all() else "mean"
    title = f"Segments on {PLANE_WORDS[x]} x {PLANE_WORDS[y]} (X = segment {marked})"
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return figure_png(fig)


def mark_centres(ax: Axes, centres: pd.DataFrame) -> None:
    """A large X in the segment's colour, labelled with the segment id, at each centre."""
    for row in centres.itertuples(index=False):
        ax.scatter(
            row.x,
            row.y,
            marker="X",
            s=220,
            color=segment_colour(int(row.segment_id)),
            edgecolors="black",
            linewidths=1.2,
            zorder=3,
        )
        ax.annotate(
            str(int(row.segment_id)),
            (row.x, row.y),
            xytext=(9, 7),
            textcoords="offset points",
            fontweight="bold",
            fontsize=11,
        )


def plot_segment_sizes(profiles: pd.DataFrame) -> bytes:
    """Customers per segment as horizontal bars, labelled with count and share."""
    names = segment_names(profiles)
    ordered = profiles.sort_values("segment_id", ascending=False)
    labels = [plot_text(shorten(segment_label(s, names), 44)) for s in ordered["segment_id"]]
    height = 0.9 + 0.42 * max(len(ordered), 2)
    margins = Margins(left=text_margin(labels, 9), bottom=0.6 / height, top=1 - 0.35 / height)
    fig = new_figure(9, height, margins)
    ax = fig.add_subplot()
    positions = np.arange(len(ordered))
    counts = ordered["n_customers"].to_numpy(dtype=float)
    ax.barh(positions, counts, color=[segment_colour(s) for s in ordered["segment_id"]])
    ax.set_yticks(positions, labels)
    ax.set_xlabel("Customers")
    ax.set_xlim(0, max(counts.max() * 1.3, 1))
    for y, count, share in zip(positions, counts, ordered["share"], strict=True):
        ax.annotate(f" {count:,.0f} ({fmt_share(share)})", (count, y), va="center", fontsize=9)
    ax.set_title("Segment sizes")
    return figure_png(fig)


def plot_profile_heatmap(profiles: pd.DataFrame) -> bytes:
    """z-scores of each segment against the whole base: red above average, blue below."""
    columns = [c for c in Z_COLUMNS if c in profiles.columns]
    values = profiles[columns].to_numpy(dtype=float)
    names = segment_names(profiles)
    labels = [plot_text(shorten(segment_label(s, names), 40)) for s in profiles["segment_id"]]
    height = 1.3 + 0.5 * max(len(profiles), 2)
    margins = Margins(
        left=text_margin(labels, 9), right=0.9, bottom=0.45 / height, top=1 - 0.45 / height
    )
    fig = new_figure(9, height, margins)
    ax = fig.add_subplot()
    image = ax.imshow(
        values, cmap="RdBu_r", vmin=-HEATMAP_Z_LIMIT, vmax=HEATMAP_Z_LIMIT, aspect="auto"
    )
    ax.set_xticks(range(len(columns)), [Z_COLUMNS[c] for c in columns])
    ax.set_yticks(range(len(profiles)), labels)
    for (row, col), value in np.ndenumerate(values):
        colour = "white" if abs(value) > 1.5 else "black"
        ax.text(col, row, f"{value:+.2f}", ha="center", va="center", color=colour, fontsize=9)
    fig.colorbar(image, ax=ax, label="z-score vs all customers", fraction=0.05, pad=0.03)
    ax.set_title("How each segment differs from the average customer")
    return figure_png(fig)


def plot_silhouette(candidates: pd.DataFrame) -> bytes:
    """Silhouette across k for each algorithm; the selected model is starred."""
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    rows = candidates[finite(candidates, "silhouette")]
    for algorithm, group in sorted(rows.groupby(rows["algorithm"].astype(str)), key=lambda g: g[0]):
        group = group.sort_values("k")
        ax.plot(group["k"], group["silhouette"], marker="o", label=plot_text(algorithm))
    selected = rows[selected_mask(rows)]
    if not selected.empty:
        ax.scatter(
            selected["k"],
            selected["silhouette"],
            marker="*",
            s=320,
            color="gold",
            edgecolors="black",
            zorder=3,
            label="selected",
        )
    ax.set_xlabel("Number of segments (k)")
    ax.set_ylabel("Silhouette (higher is better)")
    ax.set_title("Model selection: silhouette across k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    return figure_png(fig)


def elbow_rows(candidates: pd.DataFrame) -> pd.DataFrame:
    """KMeans candidates with a finite inertia, sorted by k."""
    if candidates is None or candidates.empty or "inertia" not in candidates.columns:
        return pd.DataFrame()
    is_kmeans = candidates["algorithm"].astype(str).str.lower() == "kmeans"
    return candidates[is_kmeans & finite(candidates, "inertia")].sort_values("k")


def plot_elbow(candidates: pd.DataFrame) -> bytes:
    """KMeans inertia across k: the bend ('elbow') suggests a natural number of segments."""
    rows = elbow_rows(candidates)
    fig = new_figure(7, 4, Margins(left=0.14))
    ax = fig.add_subplot()
    ax.plot(rows["k"], rows["inertia"], marker="o", color="#486581")
    for k in rows.loc[selected_mask(rows), "k"]:
        ax.axvline(k, color="goldenrod", linestyle="--", label=f"selected k = {int(k)}")
    ax.set_xlabel("Number of segments (k)")
    ax.set_ylabel("Inertia (within-segment spread)")
    ax.set_title("Elbow: KMeans inertia across k")
    ax.grid(alpha=0.3)
    if selected_mask(rows).any():
        ax.legend(fontsize=9)
    return figure_png(fig)


def migration_matrix(migrations: pd.DataFrame) -> pd.DataFrame:
    """Customers per (previous segment, current segment); missing ids sort last (as inf)."""
    frame = pd.DataFrame(
        {
            "from_key": migrations["from_segment_id"].map(sort_key),
            "to_key": migrations["to_segment_id"].map(sort_key),
            "n": pd.to_numeric(migrations["n_customers"], errors="coerce").fillna(0),
        }
    )
    matrix = frame.pivot_table(
        index="from_key", columns="to_key", values="n", aggfunc="sum", fill_value=0
    )
    return matrix.sort_index().sort_index(axis=1)


def sort_key(value: Any) -> float:
    """Numeric key for a segment id; missing ids sort last (infinity)."""
    return math.inf if is_missing(value) else float(value)


def plot_migrations(migrations: pd.DataFrame, names: Mapping[int, str]) -> bytes:
    """Heatmap of customers moving from their previous segment (rows) to the current one.

    Rows carry the segment names; columns only the ids, so the grid stays readable.
    """
    matrix = migration_matrix(migrations)
    values = matrix.to_numpy(dtype=float)
    row_labels = [
        NEW_CUSTOMERS if math.isinf(k) else plot_text(shorten(segment_label(k, names), 40))
        for k in matrix.index
    ]
    col_labels = [GONE_COLUMN if math.isinf(k) else str(int(k)) for k in matrix.columns]
    height = 1.5 + 0.42 * max(len(row_labels), 2)
    margins = Margins(left=text_margin(row_labels, 9), bottom=0.6 / height, top=1 - 0.4 / height)
    fig = new_figure(9, height, margins)
    ax = fig.add_subplot()
    ax.imshow(values, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    top = values.max() if values.size else 0
    for (row, col), value in np.ndenumerate(values):
        colour = "white" if value > 0.6 * top else "black"
        ax.text(col, row, f"{value:,.0f}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xlabel("Segment now (id)")
    ax.set_title("Previous segment (rows) to segment now (columns)")
    return figure_png(fig)
