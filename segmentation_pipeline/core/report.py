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
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from segmentation_pipeline.core.markdown import md, md_table
from segmentation_pipeline.core.report_inputs import ReportInputs
from segmentation_pipeline.core.selection import UNSTABLE_CAUTION, UNSTABLE_CHOICE

REPORT_TITLE = "Customer segmentation report"
MISSING = "—"
NEW_CUSTOMERS = "new customers"
LEFT_CUSTOMERS = "no longer present"
# Column label in the migration heatmap for customers of the previous run now absent.
GONE_COLUMN = "gone"
MAX_GENDER_BARS = 8
MAX_MIGRATION_ROWS = 60

# Stable colour per stable segment id: matplotlib's tab10 colours first, then the light
# shades of tab20 (written out, so that this module loads without matplotlib).
_PALETTE_HEX = (
    "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf "
    "aec7e8 ffbb78 98df8a ff9896 c5b0d5 c49c94 f7b6d2 c7c7c7 dbdb8d 9edae5"
).split()
PALETTE: tuple[tuple[float, float, float], ...] = tuple(
    (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255) for h in _PALETTE_HEX
)

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
    """Plain text; ``note`` marks a highlighted remark (e.g. 'first run'), and ``label``
    names its kind ("Caution", "Warning") where it is more than a note."""

    text: str
    note: bool = False
    label: str | None = None


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
    # matplotlib (about 0.5 s to import) loads here, not with this module: the report step
    # runs this in the pre-started worker (core/workers.py), where it is already loaded.
    from segmentation_pipeline.core.plots import render_images

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


# --- frame helpers (also used by the plots) --------------------------------------------------


def has_rows(frame: pd.DataFrame | None) -> bool:
    """True for a frame with at least one row."""
    return frame is not None and not frame.empty


def gender_counts(sample: pd.DataFrame) -> pd.Series:
    """Customers per gender value, largest first; rare values beyond the top grouped."""
    counts = sample["gender"].astype(str).value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    if len(counts) <= MAX_GENDER_BARS:
        return counts
    top = counts.iloc[: MAX_GENDER_BARS - 1]
    rest = counts.iloc[MAX_GENDER_BARS - 1 :].sum()
    return pd.concat([top, pd.Series({"(other)": rest})])


def selected_mask(candidates: pd.DataFrame) -> pd.Series:
    """Boolean mask of the selected candidate(s); missing flags count as not selected."""
    if "selected" not in candidates.columns:
        return pd.Series(False, index=candidates.index)
    return candidates["selected"].fillna(False).astype(bool)


def gone_segment_names(drift: pd.DataFrame | None) -> dict[int, str]:
    """segment_id -> previous name of the segments of the previous run (the drift frame)."""
    if not has_rows(drift) or "previous_name" not in drift.columns:
        return {}
    named = drift[drift["previous_name"].notna()]
    return {
        int(sid): str(name)
        for sid, name in zip(named["segment_id"], named["previous_name"], strict=True)
    }


def migration_labels(values: pd.Series, missing: str, names: Mapping[int, str]) -> pd.Series:
    """Segment labels for a from/to column; a missing id means a new (or departed) customer."""
    return values.map(lambda v: missing if is_missing(v) else segment_label(v, names))


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
        ("Agreement with previous run (ARI)", agreement_text(ari, run.get("previous_run_id"))),
    ]
    return Section("run-summary", [Paragraph(headline(inputs)), *cautions(inputs), Facts(facts)])


def cautions(inputs: ReportInputs) -> list[Paragraph]:
    """What the run's summary on the command line warns of, for the readers of the report:
    a model that was not stable under resampling, and the drift checks that warned."""
    notes = []
    if UNSTABLE_CHOICE in str(inputs.run.get("selection_rule") or ""):
        notes.append(
            Paragraph(
                f"{UNSTABLE_CAUTION} (see the model selection), and do not base campaigns on "
                "their boundaries.",
                note=True,
                label="Caution",
            )
        )
    notes += [Paragraph(warning, note=True, label="Warning") for warning in inputs.warnings]
    return notes


def agreement_text(ari: Any, previous_run_id: Any) -> str:
    """The ARI against the previous run, or why there is none."""
    if not is_missing(ari):
        return fmt_number(ari, 3)
    if is_missing(previous_run_id):
        return "first run"
    return f"none: no customer in common with run {previous_run_id}"


def input_section(inputs: ReportInputs) -> Section:
    """What the customer base looks like before any modelling."""
    sample = inputs.customers_sample
    total = inputs.run.get("n_customers")
    scope = f"{len(sample):,} customers"
    sampled = not is_missing(total) and int(total) > len(sample)
    if sampled:
        scope = f"a random sample of {len(sample):,} of {int(total):,} customers"
    return Section(
        "input-exploration",
        [
            Paragraph(f"Plots of {scope}."),
            Plot("distributions", "Distributions of age, annual income and spending score."),
            Plot("gender_mix", "Gender mix (values as given in the input)."),
            gender_table(sample, "Customers in the sample" if sampled else "Customers"),
            Plot("input_scatter", "Annual income against spending score, before segmentation."),
        ],
    )


def gender_table(sample: pd.DataFrame, count_heading: str = "Customers") -> Table:
    """The gender mix as text too: values exactly as given in the input (escaped on output).
    Counted on the plotted sample, which the heading says when it is not every customer."""
    counts = gender_counts(sample)
    total = int(counts.sum()) or 1
    rows = [[fmt_text(value), fmt_int(n), fmt_share(n / total)] for value, n in counts.items()]
    return Table(["Gender (as given)", count_heading, "Share"], rows, frozenset({1, 2}))


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
        Plot(
            "segments",
            "Customers coloured by segment, on the model's two features or else income x "
            "spending; X marks each segment's centre (its mean, off the model's features).",
        ),
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
    """Customer migrations and segment drift against the previous run; a segment gone since
    the previous run is named by its old name."""
    names = {**gone_segment_names(inputs.drift), **segment_names(inputs.profiles)}
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
        label = f"<strong>{esc(block.label)}:</strong> " if block.label else ""
        return (
            f'<p class="note">{label}{esc(block.text)}</p>'
            if block.note
            else f"<p>{esc(block.text)}</p>"
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


def md_block(block: Block, images: Mapping[str, bytes]) -> str:
    """One block as Markdown; images embedded as data URIs so the file stands alone."""
    if isinstance(block, Paragraph):
        return f"> **{block.label or 'Note'}:** {md(block.text)}" if block.note else md(block.text)
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
