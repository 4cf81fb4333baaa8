"""The run report: one self-contained HTML page and a Markdown twin, with embedded PNG plots.

The report is what a marketer opens after a nightly run, so it must open anywhere, offline,
years later: every plot is a base64 PNG data URI, the CSS is inline, and there is no script
and no external reference at all. A Content-Security-Policy forbids scripts and any non-data
resource, so even a value that slipped past escaping could not run or phone home.

Every text that comes from the input (customer ids, gender values, segment names, source path,
recommendations) is escaped in one place per output format. The sections are built once as a
small neutral document (paragraphs, fact lists, tables, plots, cards) and then rendered twice,
so the HTML and the Markdown always say the same thing.

Plots use matplotlib's object API (``matplotlib.figure.Figure``) without pyplot, so there is
no global figure state to leak between runs, and PNGs are written without a version stamp so
the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segmentation_pipeline.core.forked import ForkedCall, fork_available
from segmentation_pipeline.core.report_inputs import ReportInputs

REPORT_TITLE = "Customer segmentation report"
DPI = 100
MISSING = "—"
NEW_CUSTOMERS = "new customers"
LEFT_CUSTOMERS = "no longer present"
# Column label in the migration heatmap for customers of the previous run now absent.
GONE_COLUMN = "gone"
MAX_GENDER_BARS = 8
MAX_MIGRATION_ROWS = 60
HEATMAP_Z_LIMIT = 2.5

# Stable colour per stable segment id: tab10 first, then the light tab20 shades.
_TAB20 = colormaps["tab20"].colors
PALETTE: tuple[tuple[float, float, float], ...] = tuple(_TAB20[0::2]) + tuple(_TAB20[1::2])

FEATURE_LABELS: dict[str, str] = {
    "age": "Age (years)",
    "annual_income": "Annual income (k$)",
    "spending_score": "Spending score (1-100)",
    "gender": "Female share",
}
Z_COLUMNS: dict[str, str] = {
    "z_age": "Age",
    "z_annual_income": "Income",
    "z_spending_score": "Spending",
    "z_gender": "Female share",
}

# Section id -> heading, in reading order: business content first, technical detail last.
SECTIONS: dict[str, str] = {
    "run-summary": "Run summary",
    "segments": "Segments",
    "recommendations": "Segment names and recommendations",
    "changes": "Changes since the previous run",
    "input-exploration": "Input data",
    "model-selection": "Model selection",
}

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0; color: #1f2933; background: #f5f7fa; line-height: 1.45; }
header { background: #243b53; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 1.6em; }
header p { margin: 0; opacity: .85; }
nav { background: #fff; border-bottom: 1px solid #d9e2ec; padding: 8px 32px; position: sticky;
  top: 0; z-index: 1; }
nav a { margin-right: 18px; color: #334e68; text-decoration: none; font-size: .95em; }
main { max-width: 1120px; margin: 0 auto; padding: 8px 24px 48px; }
section { background: #fff; border: 1px solid #d9e2ec; border-radius: 8px; padding: 8px 24px 20px;
  margin: 20px 0; }
h2 { color: #243b53; border-bottom: 2px solid #d9e2ec; padding-bottom: 6px; }
h3 { color: #334e68; margin-bottom: 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: .92em; }
th, td { border: 1px solid #d9e2ec; padding: 5px 10px; text-align: left; vertical-align: top; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { width: 220px; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e7eb; }
figcaption { color: #52606d; font-size: .9em; margin-top: 4px; }
.note { background: #fffbea; border-left: 4px solid #f0b429; padding: 8px 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 14px; }
.card { border: 1px solid #d9e2ec; border-left: 8px solid var(--seg); border-radius: 6px;
  padding: 10px 14px; }
.card h3 { margin: 0 0 2px; }
.card .sub { color: #52606d; font-size: .9em; margin: 0 0 8px; }
.card p { margin: 0; }
"""


@dataclass(frozen=True)
class RenderedReport:
    """The report in both formats plus the raw PNGs (e.g. for the Dagster UI)."""

    html: str
    markdown: str
    images: dict[str, bytes]


# --- document model -------------------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    """Plain text; ``note`` marks a highlighted remark (e.g. 'first run')."""

    text: str
    note: bool = False


@dataclass(frozen=True)
class Facts:
    """Label/value pairs, shown as a two-column table."""

    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    """A data table; ``numeric`` lists the columns to right-align."""

    headers: list[str]
    rows: list[list[str]]
    numeric: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Plot:
    """A reference to one of the rendered PNGs, with a caption."""

    key: str
    caption: str


@dataclass(frozen=True)
class Card:
    """One segment's name, key figures and recommended action."""

    title: str
    subtitle: str
    body: str
    colour: str


@dataclass(frozen=True)
class Cards:
    """A grid of segment cards."""

    cards: list[Card]


@dataclass(frozen=True)
class Subheading:
    """A heading inside a section."""

    text: str


Block = Paragraph | Facts | Table | Plot | Cards | Subheading


@dataclass
class Section:
    """A top-level report section with a stable id (HTML anchor) and title (Markdown heading)."""

    id: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def title(self) -> str:
        return SECTIONS[self.id]


# --- public API -----------------------------------------------------------------------------


def render_report(inputs: ReportInputs) -> RenderedReport:
    """Render all plots, then the same sections as HTML and as Markdown."""
    images = render_images(inputs)
    sections = build_sections(inputs, images)
    title = REPORT_TITLE
    subtitle = report_subtitle(inputs.run)
    return RenderedReport(
        html=to_html(title, subtitle, sections, images),
        markdown=to_markdown(title, subtitle, sections, images),
        images=images,
    )


def write_report(rendered: RenderedReport, reports_dir: Path, run_id: str) -> dict[str, Path]:
    """Write ``<run_id>.html/.md`` and ``latest.html/.md``, each atomically.

    Each file goes to a temp file in the same folder and is then moved into place with
    os.replace, so a reader (browser, webserver, Dagster UI) never sees a half-written report.
    The Markdown embeds its images as data URIs, so ``latest.md`` needs no companion files.
    """
    check_run_id(run_id)
    reports_dir.mkdir(parents=True, exist_ok=True)
    contents = {
        "html": (reports_dir / f"{run_id}.html", rendered.html),
        "markdown": (reports_dir / f"{run_id}.md", rendered.markdown),
        "latest_html": (reports_dir / "latest.html", rendered.html),
        "latest_markdown": (reports_dir / "latest.md", rendered.markdown),
    }
    for path, text in contents.values():
        write_atomically(path, text)
    return {key: path for key, (path, _) in contents.items()}


def check_run_id(run_id: str) -> None:
    """Refuse run ids that would escape the folder or overwrite the 'latest' files."""
    forbidden = {"", ".", "..", "latest"}
    if run_id in forbidden or any(sep in run_id for sep in ("/", "\\", "\0")):
        raise ValueError(f"run_id {run_id!r} cannot be used as a report file name")


def write_atomically(path: Path, text: str) -> None:
    """Write text to a same-folder temp file, fsync it, then os.replace it over ``path``."""
    handle = tempfile.NamedTemporaryFile(
        mode="w",
        encoding="utf-8",
        newline="\n",
        dir=path.parent,
        prefix=f".{path.name}.",
        suffix=".tmp",
        delete=False,
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)  # temp files are created 0600; reports are for readers
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


# --- formatting helpers ---------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """True for None and NaN/NA scalars (pandas.isna, but safe on lists and strings)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fmt_number(value: Any, digits: int = 2) -> str:
    """A number with fixed decimals, or a dash when missing."""
    if is_missing(value):
        return MISSING
    return f"{float(value):,.{digits}f}"


def fmt_int(value: Any) -> str:
    """A whole number with thousands separators, or a dash when missing."""
    if is_missing(value):
        return MISSING
    return f"{int(value):,}"


def fmt_share(value: Any) -> str:
    """A 0..1 share as a percentage."""
    if is_missing(value):
        return MISSING
    return f"{100 * float(value):.1f}%"


def fmt_text(value: Any) -> str:
    """Any input value as display text (dates in ISO form, lists comma-joined)."""
    if is_missing(value):
        return MISSING
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ", ".join(fmt_text(v) for v in value)
    return str(value)


def ids_as_float(ids: pd.Series) -> pd.Series:
    """Segment ids as floats with NaN for missing.

    DuckDB hands nullable integers over as Int64 with <NA>, and comparisons with <NA> yield
    <NA> rather than False; plain floats keep masks and sums well defined.
    """
    return pd.to_numeric(ids, errors="coerce").astype(float)


def segment_label(segment_id: Any, names: Mapping[int, str]) -> str:
    """'3: High income, high spending' for a known segment, 'segment 3' otherwise."""
    sid = int(segment_id)
    name = names.get(sid)
    return f"{sid}: {name}" if name else f"segment {sid}"


def segment_names(profiles: pd.DataFrame) -> dict[int, str]:
    """segment_id -> segment_name from the profiles."""
    return {
        int(sid): str(name)
        for sid, name in zip(profiles["segment_id"], profiles["segment_name"], strict=True)
    }


def segment_colour(segment_id: int) -> tuple[float, float, float]:
    """The fixed plot colour of a segment id, so colours stay put across runs."""
    return PALETTE[int(segment_id) % len(PALETTE)]


def hex_colour(rgb: Sequence[float]) -> str:
    """'#rrggbb' for an RGB triple in 0..1."""
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb[:3])


def plot_text(text: str) -> str:
    """Input text safe for matplotlib: a '$' would otherwise start math mode."""
    return text.replace("$", r"\$")


def shorten(text: str, limit: int = 38) -> str:
    """Truncate long labels so plots keep their layout."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- plots ----------------------------------------------------------------------------------

# Approximate width of one character of tick/legend text, in pixels at DPI (DejaVu Sans 10 pt).
CHAR_PX = 7.0
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
    plots: list[tuple[str, Callable[[], bytes]]] = [
        ("distributions", partial(plot_distributions, sample)),
        ("gender_mix", partial(plot_gender_mix, sample)),
        ("input_scatter", partial(plot_input_scatter, sample)),
        ("segments", partial(plot_segments, sample, segment_centres(inputs), names)),
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


def has_rows(frame: pd.DataFrame | None) -> bool:
    """True for a frame with at least one row."""
    return frame is not None and not frame.empty


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


def gender_counts(sample: pd.DataFrame) -> pd.Series:
    """Customers per gender value, largest first; rare values beyond the top grouped."""
    counts = sample["gender"].astype(str).value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    if len(counts) <= MAX_GENDER_BARS:
        return counts
    top = counts.iloc[: MAX_GENDER_BARS - 1]
    rest = counts.iloc[MAX_GENDER_BARS - 1 :].sum()
    return pd.concat([top, pd.Series({"(other)": rest})])


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


def scatter_axes(ax: Axes) -> None:
    """Common labels of the income x spending plane."""
    ax.set_xlabel(FEATURE_LABELS["annual_income"])
    ax.set_ylabel(FEATURE_LABELS["spending_score"])
    ax.grid(alpha=0.3)


def plot_input_scatter(sample: pd.DataFrame) -> bytes:
    """All customers on the income x spending plane, before segmentation."""
    fig = new_figure(6.5, 4.8, Margins(left=0.12, bottom=0.11, top=0.92))
    ax = fig.add_subplot()
    ax.scatter(sample["annual_income"], sample["spending_score"], s=12, c="#486581", alpha=0.6)
    scatter_axes(ax)
    ax.set_title("Income x spending (input)")
    return figure_png(fig)


def segment_centres(inputs: ReportInputs) -> pd.DataFrame:
    """Segment centres on the income x spending plane.

    Model centroids when the model used both features, otherwise the segment averages from
    the profiles (the model's centroids then live in another space).
    """
    centroids = inputs.centroids
    if {"segment_id", "annual_income", "spending_score"} <= set(centroids.columns):
        return centroids[["segment_id", "annual_income", "spending_score"]]
    profiles = inputs.profiles
    return pd.DataFrame(
        {
            "segment_id": profiles["segment_id"],
            "annual_income": profiles["avg_annual_income"],
            "spending_score": profiles["avg_spending_score"],
        }
    )


def plot_segments(sample: pd.DataFrame, centres: pd.DataFrame, names: Mapping[int, str]) -> bytes:
    """The main picture: customers coloured by segment, centres marked with a cross."""
    segment_ids = ids_as_float(sample["segment_id"])
    ids = sorted(set(segment_ids.dropna().astype(int)) | set(names))
    labels = [plot_text(shorten(segment_label(sid, names), 44)) for sid in ids]
    legend_room = text_margin(labels, 10, extra_px=50)
    fig = new_figure(10, 5.6, Margins(left=0.07, right=0.98 - legend_room, bottom=0.1, top=0.93))
    ax = fig.add_subplot()
    for sid, label in zip(ids, labels, strict=True):
        members = sample[segment_ids == sid]
        ax.scatter(
            members["annual_income"],
            members["spending_score"],
            s=14,
            alpha=0.7,
            color=segment_colour(sid),
            label=label,
        )
    mark_centres(ax, centres)
    scatter_axes(ax)
    ax.set_title("Segments on income x spending (X = segment centre)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return figure_png(fig)


def mark_centres(ax: Axes, centres: pd.DataFrame) -> None:
    """A large X in the segment's colour, labelled with the segment id, at each centre."""
    for row in centres.itertuples(index=False):
        ax.scatter(
            row.annual_income,
            row.spending_score,
            marker="X",
            s=220,
            color=segment_colour(int(row.segment_id)),
            edgecolors="black",
            linewidths=1.2,
            zorder=3,
        )
        ax.annotate(
            str(int(row.segment_id)),
            (row.annual_income, row.spending_score),
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


def selected_mask(candidates: pd.DataFrame) -> pd.Series:
    """Boolean mask of the selected candidate(s); missing flags count as not selected."""
    if "selected" not in candidates.columns:
        return pd.Series(False, index=candidates.index)
    return candidates["selected"].fillna(False).astype(bool)


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


def migration_labels(values: pd.Series, missing: str, names: Mapping[int, str]) -> pd.Series:
    """Segment labels for a from/to column; a missing id means a new (or departed) customer."""
    return values.map(lambda v: missing if is_missing(v) else segment_label(v, names))


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


# --- sections -------------------------------------------------------------------------------


def report_subtitle(run: Mapping[str, Any]) -> str:
    """Run id and finish time under the title."""
    return f"Run {fmt_text(run.get('run_id'))} · finished {fmt_text(run.get('finished_at'))}"


def build_sections(inputs: ReportInputs, images: Mapping[str, bytes]) -> list[Section]:
    """All report sections in reading order."""
    sections = {
        "run-summary": run_summary_section(inputs),
        "segments": segments_section(inputs),
        "recommendations": recommendations_section(inputs),
        "changes": changes_section(inputs),
        "input-exploration": input_section(inputs),
        "model-selection": model_selection_section(inputs, images),
    }
    return [sections[section_id] for section_id in SECTIONS]


def separation_words(silhouette: Any) -> str:
    """A marketer's reading of the silhouette score."""
    if is_missing(silhouette):
        return "separation not measured"
    value = float(silhouette)
    if value >= 0.5:
        return "segments are well separated"
    if value >= 0.25:
        return "segments are reasonably separated"
    return "segments overlap noticeably; treat boundaries as soft"


def join_words(words: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def headline(inputs: ReportInputs) -> str:
    """One sentence with the run's outcome."""
    run = inputs.run
    features = [FEATURE_LABELS.get(f, f).split(" (")[0].lower() for f in run.get("features") or []]
    largest = inputs.profiles.sort_values(["n_customers", "segment_id"], ascending=[False, True])
    text = (
        f"{fmt_int(run.get('n_customers'))} customers were grouped into "
        f"{fmt_int(run.get('n_segments'))} segments by {fmt_text(run.get('algorithm'))} "
        f"on {join_words(features) or MISSING}; {separation_words(run.get('silhouette'))}."
    )
    if not largest.empty:
        top = largest.iloc[0]
        text += f" Largest segment: {top['segment_name']} ({fmt_share(top['share'])} of customers)."
    return text


def run_summary_section(inputs: ReportInputs) -> Section:
    """Input, row counts, chosen model and its quality metrics."""
    run = inputs.run
    ari = run.get("ari_vs_previous")
    facts = [
        ("Run id", fmt_text(run.get("run_id"))),
        ("Finished at", fmt_text(run.get("finished_at"))),
        ("Input file", fmt_text(run.get("source"))),
        ("Input SHA-256", fmt_text(run.get("source_sha256"))),
        ("Customers segmented", fmt_int(run.get("n_customers"))),
        ("Rejected rows", fmt_int(run.get("n_rejected"))),
        ("Algorithm", fmt_text(run.get("algorithm"))),
        ("Segments (k)", fmt_int(run.get("n_segments"))),
        ("Clustering features", fmt_text(run.get("features"))),
        ("Silhouette (-1..1, higher is better)", fmt_number(run.get("silhouette"), 3)),
        ("Davies-Bouldin (lower is better)", fmt_number(run.get("davies_bouldin"), 3)),
        ("Calinski-Harabasz (higher is better)", fmt_number(run.get("calinski_harabasz"), 1)),
        (
            "Agreement with previous run (ARI)",
            "first run" if is_missing(ari) else fmt_number(ari, 3),
        ),
    ]
    return Section("run-summary", [Paragraph(headline(inputs)), Facts(facts)])


def input_section(inputs: ReportInputs) -> Section:
    """What the customer base looks like before any modelling."""
    sample = inputs.customers_sample
    total = inputs.run.get("n_customers")
    scope = f"{len(sample):,} customers"
    if not is_missing(total) and int(total) > len(sample):
        scope = f"a random sample of {len(sample):,} of {int(total):,} customers"
    return Section(
        "input-exploration",
        [
            Paragraph(f"Plots of {scope}."),
            Plot("distributions", "Distributions of age, annual income and spending score."),
            Plot("gender_mix", "Gender mix (values as given in the input)."),
            gender_table(sample),
            Plot("input_scatter", "Annual income against spending score, before segmentation."),
        ],
    )


def gender_table(sample: pd.DataFrame) -> Table:
    """The gender mix as text too: values exactly as given in the input (escaped on output)."""
    counts = gender_counts(sample)
    total = int(counts.sum()) or 1
    rows = [[fmt_text(value), fmt_int(n), fmt_share(n / total)] for value, n in counts.items()]
    return Table(["Gender (as given)", "Customers", "Share"], rows, frozenset({1, 2}))


def candidates_table(candidates: pd.DataFrame) -> Table:
    """Every model tried, the selected one flagged."""
    ordered = candidates.sort_values(["algorithm", "k"], kind="stable")
    rows = [
        [
            fmt_text(row.get("algorithm")),
            fmt_int(row.get("k")),
            fmt_number(row.get("silhouette"), 3),
            fmt_number(row.get("davies_bouldin"), 3),
            fmt_number(row.get("calinski_harabasz"), 1),
            fmt_number(row.get("inertia"), 1),
            fmt_number(row.get("stability"), 3),
            "yes" if flag else "",
        ]
        for (_, row), flag in zip(ordered.iterrows(), selected_mask(ordered), strict=True)
    ]
    headers = [
        "Algorithm",
        "k",
        "Silhouette",
        "Davies-Bouldin",
        "Calinski-Harabasz",
        "Inertia",
        "Stability",
        "Selected",
    ]
    return Table(headers, rows, numeric=frozenset(range(1, 7)))


def model_selection_section(inputs: ReportInputs, images: Mapping[str, bytes]) -> Section:
    """Why this model and this number of segments."""
    blocks: list[Block] = [
        Paragraph(
            "Several algorithms and numbers of segments were tried; the selected model "
            "balances separation (silhouette), compactness and stability across resamples."
        )
    ]
    if "silhouette" in images:
        blocks.append(Plot("silhouette", "Silhouette across k for each algorithm."))
    if "elbow" in images:
        blocks.append(Plot("elbow", "Elbow plot: KMeans inertia across k."))
    else:
        blocks.append(Paragraph("No KMeans inertia was recorded, so there is no elbow plot."))
    if has_rows(inputs.candidates):
        blocks.append(candidates_table(inputs.candidates))
    else:
        blocks.append(Paragraph("No candidate models were recorded.", note=True))
    return Section("model-selection", blocks)


def avg_and_median(row: pd.Series, feature: str) -> str:
    """'32.7 (32.0)': average with the median in brackets, for one feature of a profile row."""
    average = fmt_number(row.get(f"avg_{feature}"), 1)
    median = row.get(f"median_{feature}")
    return average if is_missing(median) else f"{average} ({fmt_number(median, 1)})"


def profile_table(profiles: pd.DataFrame) -> Table:
    """Size and typical customer of each segment."""
    rows = [
        [
            fmt_int(row["segment_id"]),
            str(row["segment_name"]),
            fmt_int(row["n_customers"]),
            fmt_share(row["share"]),
            avg_and_median(row, "age"),
            avg_and_median(row, "annual_income"),
            avg_and_median(row, "spending_score"),
            fmt_share(row.get("female_share")),
        ]
        for _, row in profiles.sort_values("segment_id").iterrows()
    ]
    headers = [
        "Segment",
        "Name",
        "Customers",
        "Share",
        "Age avg (median)",
        "Income k$ avg (median)",
        "Spending avg (median)",
        "Female",
    ]
    return Table(headers, rows, numeric=frozenset({0, 2, 3, 4, 5, 6, 7}))


def centroid_table(centroids: pd.DataFrame, names: Mapping[int, str]) -> Table:
    """Model centroids in original units."""
    features = [c for c in centroids.columns if c != "segment_id"]
    rows = [
        [segment_label(row["segment_id"], names)]
        + [fmt_number(row[f], 1 if f != "gender" else 2) for f in features]
        for _, row in centroids.sort_values("segment_id").iterrows()
    ]
    headers = ["Segment"] + [FEATURE_LABELS.get(f, f) for f in features]
    return Table(headers, rows, numeric=frozenset(range(1, len(headers))))


def segments_section(inputs: ReportInputs) -> Section:
    """Where the segments sit, how big they are and how they differ."""
    names = segment_names(inputs.profiles)
    blocks: list[Block] = [
        Plot("segments", "Customers coloured by segment; X marks each segment's centre."),
        Plot("segment_sizes", "Customers per segment."),
        Subheading("Segment profiles"),
        profile_table(inputs.profiles),
        Plot(
            "profile_heatmap",
            "Difference from the average customer in standard deviations (z-score): "
            "red = above average, blue = below.",
        ),
    ]
    if has_rows(inputs.centroids):
        blocks += [
            Subheading("Model centroids (original units)"),
            centroid_table(inputs.centroids, names),
        ]
    return Section("segments", blocks)


def recommendations_section(inputs: ReportInputs) -> Section:
    """One card per segment: name, who they are, what to do."""
    cards = [
        Card(
            title=segment_label(row["segment_id"], segment_names(inputs.profiles)),
            subtitle=(
                f"{fmt_int(row['n_customers'])} customers ({fmt_share(row['share'])}) · "
                f"age {fmt_number(row['avg_age'], 0)} · "
                f"income {fmt_number(row['avg_annual_income'], 0)} k$ · "
                f"spending {fmt_number(row['avg_spending_score'], 0)}/100"
            ),
            body=str(row["recommendation"]),
            colour=hex_colour(segment_colour(int(row["segment_id"]))),
        )
        for _, row in inputs.profiles.sort_values("segment_id").iterrows()
    ]
    intro = Paragraph(
        "Names describe how each segment differs from the average customer on the clustering "
        "features (with age or gender added when clearly distinctive); the action follows "
        "from the segment's income and spending levels."
    )
    return Section("recommendations", [intro, Cards(cards)])


def migration_summary(migrations: pd.DataFrame) -> str:
    """How many customers stayed, moved or are new, in one sentence."""
    counts = pd.to_numeric(migrations["n_customers"], errors="coerce").fillna(0)
    from_ids = ids_as_float(migrations["from_segment_id"])
    to_ids = ids_as_float(migrations["to_segment_id"])
    new = counts[from_ids.isna()].sum()
    left = counts[from_ids.notna() & to_ids.isna()].sum()
    known = from_ids.notna() & to_ids.notna()
    stayed = counts[known & (from_ids == to_ids)].sum()
    moved = counts[known & (from_ids != to_ids)].sum()
    returning = stayed + moved
    text = (
        f"Of {returning:,.0f} customers also in the previous run, {stayed:,.0f} "
        f"({fmt_share(stayed / returning if returning else math.nan)}) kept their segment and "
        f"{moved:,.0f} moved; {new:,.0f} customers are new."
    )
    if left:
        text += f" {left:,.0f} customers of the previous run are no longer present."
    return text


def migrations_table(migrations: pd.DataFrame, names: Mapping[int, str]) -> Table:
    """Customers who changed segment or are new, biggest flows first (stayers are in the plot)."""
    from_ids = ids_as_float(migrations["from_segment_id"])
    to_ids = ids_as_float(migrations["to_segment_id"])
    changed = (from_ids != to_ids).to_numpy()  # NaN != anything: new and departed count
    frame = pd.DataFrame(
        {
            "from": migration_labels(from_ids, NEW_CUSTOMERS, names),
            "to": migration_labels(to_ids, LEFT_CUSTOMERS, names),
            "n": pd.to_numeric(migrations["n_customers"], errors="coerce").fillna(0),
        }
    )[changed]
    frame = frame.sort_values(["n", "from", "to"], ascending=[False, True, True], kind="stable")
    rows = [
        [str(r["from"]), str(r["to"]), fmt_int(r["n"])]
        for _, r in frame.head(MAX_MIGRATION_ROWS).iterrows()
    ]
    return Table(["From (previous run)", "To (this run)", "Customers"], rows, frozenset({2}))


def drift_table(drift: pd.DataFrame, names: Mapping[int, str]) -> Table:
    """Share change and centroid movement per segment."""
    rows = []
    for _, row in drift.sort_values("segment_id").iterrows():
        previous, current = row.get("previous_share"), row.get("share")
        change = MISSING
        if not is_missing(previous) and not is_missing(current):
            change = f"{100 * (float(current) - float(previous)):+.1f} pp"
        elif is_missing(previous):
            change = "new segment"
        elif is_missing(current):
            change = "segment gone"
        rows.append(
            [
                segment_label(row["segment_id"], names),
                fmt_share(previous),
                fmt_share(current),
                change,
                fmt_number(row.get("centroid_shift"), 2),
            ]
        )
    headers = ["Segment", "Previous share", "Share now", "Change", "Centroid shift"]
    return Table(headers, rows, numeric=frozenset({1, 2, 3, 4}))


def changes_section(inputs: ReportInputs) -> Section:
    """Customer migrations and segment drift against the previous run."""
    names = segment_names(inputs.profiles)
    if inputs.migrations is None and inputs.drift is None:
        return Section(
            "changes",
            [
                Paragraph(
                    "First run: there is no previous run to compare with. From the next run "
                    "on, this section shows how customers moved between segments and how "
                    "segment sizes and centres drifted.",
                    note=True,
                )
            ],
        )
    blocks: list[Block] = [Subheading("Customer migrations")]
    if has_rows(inputs.migrations):
        blocks += [
            Paragraph(migration_summary(inputs.migrations)),
            Plot("migrations", "Customers by previous segment (rows) and current segment."),
            Subheading("Largest movements"),
            migrations_table(inputs.migrations, names),
        ]
    else:
        blocks.append(Paragraph("No migration data for this run.", note=True))
    blocks.append(Subheading("Segment drift"))
    if has_rows(inputs.drift):
        blocks.append(drift_table(inputs.drift, names))
    else:
        blocks.append(Paragraph("No drift data for this run.", note=True))
    return Section("changes", blocks)


# --- HTML -----------------------------------------------------------------------------------


def esc(text: Any) -> str:
    """HTML-escape text; also break '://' so no URL-like text appears in the page source."""
    return html.escape(str(text), quote=True).replace("://", ":&#47;&#47;")


def data_uri(png: bytes) -> str:
    """A PNG as a base64 data URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_table(table: Table, css_class: str = "") -> str:
    """A table with escaped cells; numeric columns right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{esc(c)}</td>' if i in table.numeric else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>\n"
        for row in table.rows
    )
    class_attr = f' class="{css_class}"' if css_class else ""
    return f"<table{class_attr}><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def html_facts(facts: Facts) -> str:
    """Label/value table."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>\n" for k, v in facts.items)
    return f'<table class="facts"><tbody>\n{rows}</tbody></table>'


def html_cards(cards: Cards) -> str:
    """Segment cards with the segment's plot colour as a left border."""
    items = "".join(
        f'<div class="card" style="--seg: {esc(c.colour)}"><h3>{esc(c.title)}</h3>'
        f'<p class="sub">{esc(c.subtitle)}</p><p>{esc(c.body)}</p></div>\n'
        for c in cards.cards
    )
    return f'<div class="cards">\n{items}</div>'


def html_block(block: Block, images: Mapping[str, bytes]) -> str:
    """One block as HTML."""
    if isinstance(block, Paragraph):
        return (
            f'<p class="note">{esc(block.text)}</p>' if block.note else f"<p>{esc(block.text)}</p>"
        )
    if isinstance(block, Subheading):
        return f"<h3>{esc(block.text)}</h3>"
    if isinstance(block, Facts):
        return html_facts(block)
    if isinstance(block, Table):
        return html_table(block)
    if isinstance(block, Cards):
        return html_cards(block)
    return (
        f'<figure id="plot-{esc(block.key)}"><img src="{data_uri(images[block.key])}" '
        f'alt="{esc(block.caption)}"><figcaption>{esc(block.caption)}</figcaption></figure>'
    )


def to_html(
    title: str, subtitle: str, sections: Sequence[Section], images: Mapping[str, bytes]
) -> str:
    """The full, self-contained HTML page."""
    nav = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}">\n<h2>{esc(s.title)}</h2>\n'
        + "\n".join(html_block(b, images) for b in s.blocks)
        + "\n</section>"
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)} · {esc(subtitle)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>\n"
        f"<nav>{nav}</nav>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


# --- Markdown -------------------------------------------------------------------------------

MARKDOWN_SPECIALS = ("\\", "`", "*", "_", "[", "]", "|")


def md(text: Any) -> str:
    """Markdown-safe text: HTML-escaped (raw HTML passes through Markdown), specials escaped."""
    escaped = html.escape(str(text), quote=False)
    for special in MARKDOWN_SPECIALS:
        escaped = escaped.replace(special, "\\" + special)
    return " ".join(escaped.splitlines())


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: frozenset[int]) -> str:
    """A pipe table; every cell escaped (pipes included)."""
    align = ["---:" if i in numeric else "---" for i in range(len(headers))]
    lines = [
        "| " + " | ".join(md(h) for h in headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def md_block(block: Block, images: Mapping[str, bytes]) -> str:
    """One block as Markdown; images embedded as data URIs so the file stands alone."""
    if isinstance(block, Paragraph):
        return f"> **Note:** {md(block.text)}" if block.note else md(block.text)
    if isinstance(block, Subheading):
        return f"### {md(block.text)}"
    if isinstance(block, Facts):
        return md_table(["Item", "Value"], [list(item) for item in block.items], frozenset())
    if isinstance(block, Table):
        return md_table(block.headers, block.rows, block.numeric)
    if isinstance(block, Cards):
        return "\n\n".join(
            f"#### {md(c.title)}\n\n*{md(c.subtitle)}*\n\n{md(c.body)}" for c in block.cards
        )
    return f"![{md(block.caption)}]({data_uri(images[block.key])})\n\n*{md(block.caption)}*"


def to_markdown(
    title: str, subtitle: str, sections: Sequence[Section], images: Mapping[str, bytes]
) -> str:
    """The Markdown twin: same sections, headings '## <title>' with an anchor per section id."""
    parts = [f"# {md(title)}", md(subtitle)]
    for section in sections:
        parts.append(f'<a id="{section.id}"></a>\n\n## {md(section.title)}')
        parts += [md_block(b, images) for b in section.blocks]
    return "\n\n".join(parts) + "\n"
