"""The run report: self-contained HTML + Markdown, escaping, atomic writes, real rendering."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import struct
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from segmentation_pipeline.core.forked import fork_available
from segmentation_pipeline.core.markdown import md
from segmentation_pipeline.core.plots import draw_plots, planned_plots, render_images
from segmentation_pipeline.core.profiling import build_profiles
from segmentation_pipeline.core.report import (
    PALETTE,
    SECTIONS,
    RenderedReport,
    render_report,
    write_report,
)
from segmentation_pipeline.core.report_inputs import ReportInputs, drift_against
from segmentation_pipeline.core.selection import UNSTABLE_CHOICE
from tests.mall_stats import mall_customers, overall_stats, segment_stats

FEATURES = ["annual_income", "spending_score"]
CHROMIUM = Path("/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG_TAG = re.compile(r"<img\b[^>]*>")
IMG_SRC = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
SCRIPT_PAYLOAD = "<script>alert(1)</script>"


# --- inputs ---------------------------------------------------------------------------------


def model_candidates(points: np.ndarray, selected_k: int) -> pd.DataFrame:
    """KMeans and agglomerative candidates for k = 2..8 with real metrics."""
    rows = []
    for k in range(2, 9):
        kmeans = KMeans(k, n_init=4, random_state=42).fit(points)
        agglo = AgglomerativeClustering(k).fit(points)
        for algorithm, labels, inertia in (
            ("kmeans", kmeans.labels_, kmeans.inertia_),
            ("agglomerative", agglo.labels_, float("nan")),
        ):
            rows.append(
                {
                    "algorithm": algorithm,
                    "k": k,
                    "silhouette": silhouette_score(points, labels),
                    "davies_bouldin": davies_bouldin_score(points, labels),
                    "calinski_harabasz": calinski_harabasz_score(points, labels),
                    "inertia": inertia,
                    "stability": 0.9 - 0.02 * k,
                    "selected": algorithm == "kmeans" and k == selected_k,
                }
            )
    return pd.DataFrame(rows)


def fake_migrations(customers: pd.DataFrame) -> pd.DataFrame:
    """Previous-run assignment: most stay, every 9th moved on, the last 12 customers are new."""
    current = customers["segment_id"].astype(int)
    previous = current.where(np.arange(len(current)) % 9 != 0, (current + 1) % 5).astype(float)
    previous.iloc[-12:] = np.nan
    flows = pd.DataFrame({"from_segment_id": previous, "to_segment_id": current})
    counts = flows.groupby(["from_segment_id", "to_segment_id"], dropna=False).size()
    return counts.rename("n_customers").reset_index()


def fake_drift(profiles: pd.DataFrame) -> pd.DataFrame:
    """Small share changes and centroid shifts, one segment new since the previous run."""
    previous = profiles["share"] + np.array([0.02, -0.01, 0.0, -0.01, 0.0])[: len(profiles)]
    previous.iloc[-1] = np.nan
    return pd.DataFrame(
        {
            "segment_id": profiles["segment_id"],
            "previous_share": previous,
            "share": profiles["share"],
            "centroid_shift": np.linspace(0.1, 1.5, len(profiles)),
        }
    )


def build_inputs(customers: pd.DataFrame, first_run: bool) -> ReportInputs:
    """Report inputs from a customer table: KMeans(5) on income x spending, like the pipeline."""
    customers = customers.copy()
    points = customers[FEATURES].to_numpy(dtype=float)
    model = KMeans(5, n_init=10, random_state=42).fit(points)
    customers["segment_id"] = model.labels_
    profiles = build_profiles(segment_stats(customers), overall_stats(customers), FEATURES)
    centroids = pd.DataFrame(model.cluster_centers_, columns=FEATURES)
    centroids.insert(0, "segment_id", range(5))
    run = {
        "run_id": "run-0001",
        "finished_at": "2025-01-31T02:00:00+00:00",
        "source": "/data/incoming/Mall_Customers.csv",
        "source_sha256": "ab" * 32,
        "n_customers": len(customers),
        "n_rejected": 3,
        "algorithm": "kmeans",
        "n_segments": 5,
        "features": FEATURES,
        "silhouette": silhouette_score(points, model.labels_),
        "davies_bouldin": davies_bouldin_score(points, model.labels_),
        "calinski_harabasz": calinski_harabasz_score(points, model.labels_),
        "ari_vs_previous": None if first_run else 0.87,
    }
    return ReportInputs(
        run=run,
        customers_sample=customers,
        candidates=model_candidates(points, selected_k=5),
        profiles=profiles,
        centroids=centroids,
        migrations=None if first_run else fake_migrations(customers),
        drift=None if first_run else fake_drift(profiles),
    )


@pytest.fixture(scope="module")
def mall_inputs() -> ReportInputs:
    """A second-run report of the Mall data (migrations and drift present)."""
    return build_inputs(mall_customers(), first_run=False)


@pytest.fixture(scope="module")
def rendered(mall_inputs: ReportInputs) -> RenderedReport:
    """The rendered second-run report."""
    return render_report(mall_inputs)


# --- helpers --------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def embedded_pngs(page: str) -> list[bytes]:
    """Decoded bytes of every <img> in the page; fails on any image that is not a PNG data URI."""
    images = []
    for tag in IMG_TAG.findall(page):
        match = IMG_SRC.search(tag)
        assert match, f"image is not an embedded PNG data URI: {tag[:120]}"
        images.append(base64.b64decode(match.group(1), validate=True))
    return images


# --- content --------------------------------------------------------------------------------


def test_html_is_self_contained(rendered):
    page = rendered.html
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "Content-Security-Policy" in page


def test_html_has_every_section(rendered):
    for section_id, title in SECTIONS.items():
        assert f'<section id="{section_id}">' in rendered.html
        assert f"<h2>{html.escape(title)}</h2>" in rendered.html
        assert f"## {title}" in rendered.markdown
        assert f'<a id="{section_id}"></a>' in rendered.markdown


def test_every_plot_is_an_embedded_valid_png(rendered):
    pngs = embedded_pngs(rendered.html)
    expected = {
        "distributions",
        "gender_mix",
        "input_scatter",
        "silhouette",
        "elbow",
        "segments",
        "segment_sizes",
        "profile_heatmap",
        "migrations",
    }
    assert set(rendered.images) == expected
    assert len(pngs) == len(expected)
    assert sorted(pngs) == sorted(rendered.images.values())
    for png in pngs:
        width, height = png_size(png)
        assert width > 200 and height > 100


def test_markdown_twin_is_self_contained_with_the_same_images(rendered):
    markdown = rendered.markdown
    assert "http://" not in markdown and "https://" not in markdown
    uris = re.findall(r"\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    decoded = sorted(base64.b64decode(uri) for uri in uris)
    assert decoded == sorted(rendered.images.values())


def test_summary_names_and_recommendations_are_shown(rendered, mall_inputs):
    for name, action in zip(
        mall_inputs.profiles["segment_name"], mall_inputs.profiles["recommendation"], strict=True
    ):
        assert html.escape(name) in rendered.html
        assert html.escape(action) in rendered.html
    assert "Rejected rows" in rendered.html
    assert "0.870" in rendered.html  # ARI vs previous run
    assert "customers are new" in rendered.html  # migration summary


def test_first_run_says_so_and_has_no_migration_plot():
    report = render_report(build_inputs(mall_customers(), first_run=True))
    assert "First run" in report.html and "First run" in report.markdown
    assert "migrations" not in report.images
    assert "segments" in report.images


def test_a_replaced_customer_base_is_not_called_a_first_run(mall_inputs):
    """A previous run with no customer in common has no ARI; it is still a previous run."""
    run = {**mall_inputs.run, "ari_vs_previous": None, "previous_run_id": "run-0000"}
    report = render_report(replace(mall_inputs, run=run))
    for text in (report.html, report.markdown):
        assert "none: no customer in common with run run-0000" in text
        assert "first run" not in text.lower()


def test_an_unstable_model_and_drift_warnings_are_told_in_the_summary(mall_inputs, rendered):
    """The command line's caution and warnings, which the report used to leave out."""
    run = {**mall_inputs.run, "selection_rule": f"kmeans: {UNSTABLE_CHOICE} 0.8 (...)"}
    warning = "silhouette_drop: segments are less separated: silhouette 0.480, was 0.555"
    report = render_report(replace(mall_inputs, run=run, warnings=(warning,)))

    summary = report.markdown.split("## Run summary")[1].split("\n## ")[0]
    assert "> **Caution:** no model was stable under resampling" in summary
    assert f"> **Warning:** {md(warning)}" in summary
    assert "<strong>Caution:</strong> no model was stable under resampling" in report.html
    assert f"<strong>Warning:</strong> {html.escape(warning)}</p>" in report.html
    assert "Caution:" not in rendered.markdown and "Warning:" not in rendered.markdown


def test_rendering_is_deterministic(mall_inputs, rendered):
    again = render_report(mall_inputs)
    assert again.html == rendered.html
    assert again.images == rendered.images


def test_five_thousand_row_sample_renders_quickly(mall_inputs):
    rng = np.random.default_rng(0)
    base = mall_inputs.customers_sample
    sample = base.sample(5000, replace=True, random_state=1).reset_index(drop=True)
    sample["customer_id"] = [f"C{i:05d}" for i in range(len(sample))]
    for column in ("annual_income", "spending_score"):
        sample[column] = sample[column] + rng.normal(0, 2, len(sample))
    inputs = replace(
        mall_inputs, run={**mall_inputs.run, "n_customers": 50_000}, customers_sample=sample
    )
    started = time.perf_counter()
    report = render_report(inputs)
    elapsed = time.perf_counter() - started
    assert "a random sample of 5,000 of 50,000 customers" in report.html
    # the gender table counts the plotted sample, not the whole base: its heading says so
    assert "| Gender (as given) | Customers in the sample | Share |" in report.markdown
    assert elapsed < 10, f"rendering took {elapsed:.1f} s"  # about 2 s on a 2-CPU dev box


def test_nullable_integer_ids_from_duckdb_are_handled(mall_inputs):
    migrations = mall_inputs.migrations.copy()
    for column in ("from_segment_id", "to_segment_id"):
        migrations[column] = migrations[column].astype("Int64")  # NaN becomes <NA>
    departed = pd.DataFrame(
        {
            "from_segment_id": pd.array([2], dtype="Int64"),
            "to_segment_id": pd.array([None], dtype="Int64"),
            "n_customers": [4],
        }
    )
    migrations = pd.concat([migrations, departed], ignore_index=True)
    sample = mall_inputs.customers_sample.copy()
    sample["segment_id"] = sample["segment_id"].astype("Int64")
    report = render_report(replace(mall_inputs, customers_sample=sample, migrations=migrations))
    assert "12 customers are new" in report.html
    assert "4 customers of the previous run are no longer present" in report.html
    assert "no longer present</td>" in report.html  # the departed flow is listed


def test_segments_plot_falls_back_to_profile_means_without_income_spending_centroids(
    mall_inputs,
):
    centroids = pd.DataFrame({"segment_id": range(5), "age": np.linspace(25, 55, 5)})
    run = {**mall_inputs.run, "features": ["age"]}
    report = render_report(replace(mall_inputs, run=run, centroids=centroids))
    assert png_size(report.images["segments"])[0] > 0
    assert "Age (years)" in report.html  # centroid table in original units


def test_missing_candidates_leave_a_note_instead_of_plots(mall_inputs):
    report = render_report(replace(mall_inputs, candidates=mall_inputs.candidates.iloc[0:0]))
    assert "silhouette" not in report.images and "elbow" not in report.images
    assert "No candidate models were recorded." in report.html


# --- escaping -------------------------------------------------------------------------------


def hostile_inputs(mall_inputs: ReportInputs) -> ReportInputs:
    """Inputs whose text fields carry markup, pipes, '$' and a URL."""
    sample = mall_inputs.customers_sample.copy()
    sample.loc[sample.index[:5], "gender"] = SCRIPT_PAYLOAD
    sample.loc[sample.index[0], "customer_id"] = '"><img src=x onerror=alert(2)>'
    profiles = mall_inputs.profiles.copy()
    profiles.loc[0, "segment_name"] = "Big <b>spenders</b> | $VIP$"
    profiles.loc[1, "recommendation"] = "Offer <iframe src=x></iframe> deals"
    run = {**mall_inputs.run, "source": "https://example.com/<svg onload=alert(3)>.csv"}
    return replace(mall_inputs, run=run, customers_sample=sample, profiles=profiles)


def test_input_text_is_escaped_in_html(mall_inputs):
    report = render_report(hostile_inputs(mall_inputs))
    page = report.html
    assert SCRIPT_PAYLOAD not in page
    for raw in ("<b>spenders</b>", "<iframe", "<svg", "<script"):
        assert raw not in page
    assert "Big &lt;b&gt;spenders&lt;/b&gt; | $VIP$" in page
    assert "https://" not in page  # a URL-like source is shown, but not as a reference


def test_input_text_is_escaped_in_markdown(mall_inputs):
    markdown = render_report(hostile_inputs(mall_inputs)).markdown
    assert "<b>" not in markdown and "<iframe" not in markdown and "<svg" not in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| 0 |")]
    assert table_rows, "profile table row of segment 0 missing"
    assert r"Big &lt;b&gt;spenders&lt;/b&gt; \| $VIP$" in table_rows[0]
    cells = re.split(r"(?<!\\)\|", table_rows[0])
    assert len(cells) == 10  # 8 columns: the escaped pipe did not add one


# --- writing --------------------------------------------------------------------------------


def test_write_report_writes_run_and_latest_files_atomically(rendered, tmp_path):
    reports_dir = tmp_path / "reports"
    paths = write_report(rendered, reports_dir, "run-0001")
    assert set(paths) == {"html", "markdown", "latest_html", "latest_markdown"}
    assert paths["html"] == reports_dir / "run-0001.html"
    assert paths["latest_markdown"] == reports_dir / "latest.md"
    assert paths["html"].read_text(encoding="utf-8") == rendered.html
    assert paths["latest_html"].read_bytes() == paths["html"].read_bytes()
    assert paths["latest_markdown"].read_bytes() == paths["markdown"].read_bytes()
    assert sorted(p.name for p in reports_dir.iterdir()) == [
        "latest.html",
        "latest.md",
        "run-0001.html",
        "run-0001.md",
    ]  # no temp files left behind
    assert os.stat(paths["html"]).st_mode & 0o777 == 0o644


def test_write_report_replaces_latest_with_the_newest_run(rendered, tmp_path):
    older = RenderedReport(html="<p>old</p>", markdown="old", images={})
    write_report(older, tmp_path, "run-0000")
    write_report(rendered, tmp_path, "run-0001")
    assert (tmp_path / "latest.html").read_text(encoding="utf-8") == rendered.html
    assert (tmp_path / "run-0000.html").read_text(encoding="utf-8") == "<p>old</p>"


@pytest.mark.parametrize("run_id", ["", "latest", "../escape", "a/b", ".."])
def test_write_report_refuses_unsafe_run_ids(rendered, tmp_path, run_id):
    with pytest.raises(ValueError):
        write_report(rendered, tmp_path, run_id)


# --- headless browser -----------------------------------------------------------------------

PROBE_SCRIPT = """<script>
window.__probe = {errors: [], blocked: []};
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__probe.errors.push(t && t.tagName ? 'failed to load ' + t.tagName : String(e.message));
}, true);
document.addEventListener('securitypolicyviolation', function (e) {
  window.__probe.blocked.push(e.violatedDirective + ' ' + e.blockedURI);
});
function writeProbe() {
  window.__probe.images = Array.prototype.map.call(document.images, function (img) {
    return {alt: img.alt, width: img.naturalWidth, height: img.naturalHeight};
  });
  window.__probe.sections = Array.prototype.map.call(
    document.querySelectorAll('section'), function (s) { return s.id; });
  window.__probe.title = document.title;
  var out = document.createElement('pre');
  out.id = 'probe-result';
  out.textContent = JSON.stringify(window.__probe);
  document.body.appendChild(out);
}
// CSP violation events are queued as tasks, so report a moment after load.
window.addEventListener('load', function () { setTimeout(writeProbe, 100); });
</script>
"""
# Injected after the page's CSP: must be blocked, proving the policy is in force.
INJECTED_AFTER_CSP = "<script>document.title = 'CSP-BYPASSED';</script>"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Headless Chromium, installed with apt when missing; a failed install fails the tests."""
    if not CHROMIUM.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
        ):
            result = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=1200, check=False
            )
            if result.returncode != 0:
                pytest.fail(
                    f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr}"
                )
    if not CHROMIUM.exists():
        pytest.fail(f"chromium was installed but {CHROMIUM} does not exist")
    return CHROMIUM


def run_chromium(binary: Path, profile_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium offline-ish with a throw-away profile; fail on a non-zero exit."""
    command = [
        str(binary),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        "--virtual-time-budget=5000",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr}"
    return result


def probe_copy(page: str) -> str:
    """A test copy of the report: probe script before the CSP, a hostile script after it."""
    with_probe = page.replace("<head>\n", "<head>\n" + PROBE_SCRIPT, 1)
    return with_probe.replace("</body>", INJECTED_AFTER_CSP + "\n</body>", 1)


@pytest.fixture(scope="module")
def written_report(rendered, tmp_path_factory) -> Path:
    """The report written the way the pipeline writes it."""
    reports_dir = tmp_path_factory.mktemp("reports")
    return write_report(rendered, reports_dir, "run-0001")["html"]


def test_report_renders_in_headless_chromium(chromium, written_report, tmp_path):
    copy = tmp_path / "probe.html"
    copy.write_text(probe_copy(written_report.read_text(encoding="utf-8")), encoding="utf-8")
    result = run_chromium(chromium, tmp_path / "profile", "--dump-dom", copy.as_uri())
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', result.stdout, re.DOTALL)
    assert match, f"probe result missing from the dumped DOM:\n{result.stdout[-1000:]}"
    probe = json.loads(html.unescape(match.group(1)))

    assert probe["errors"] == []
    assert probe["title"] != "CSP-BYPASSED"
    assert len(probe["blocked"]) == 1 and probe["blocked"][0].startswith("script-src")
    assert probe["sections"] == list(SECTIONS)
    assert len(probe["images"]) == 9
    for image in probe["images"]:
        assert image["width"] > 0 and image["height"] > 0, image


def test_report_screenshot_is_not_blank(chromium, written_report, tmp_path):
    screenshot = tmp_path / "report.png"
    run_chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        "--window-size=1280,2400",
        written_report.as_uri(),
    )
    data = screenshot.read_bytes()
    assert png_size(data) == (1280, 2400)
    pixels = imread(screenshot)
    assert pixels.std() > 0.05  # more than a blank or single-colour page
    rgb = (pixels[..., :3] * 255).astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    assert len(np.unique(packed)) > 100  # text, plots and colours, not a flat page
    keep = os.environ.get("REPORT_SCREENSHOT_DIR")
    if keep:  # handy for eyeballing: REPORT_SCREENSHOT_DIR=/tmp pytest -k screenshot
        shutil.copy(screenshot, Path(keep) / "report-screenshot.png")


def test_plots_drawn_in_two_processes_equal_plots_drawn_in_one(mall_inputs: ReportInputs) -> None:
    # This machine has 2 cores, so render_images draws every other plot in a forked worker;
    # draw_plots draws them all here. Same names, same order, same bytes.
    assert fork_available()
    assert render_images(mall_inputs) == draw_plots(planned_plots(mall_inputs))
    assert list(render_images(mall_inputs)) == [name for name, _ in planned_plots(mall_inputs)]


def test_palette_is_matplotlibs_tab10_then_light_tab20() -> None:
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    assert PALETTE == tuple(tab20[0::2]) + tuple(tab20[1::2])


def test_the_label_margin_holds_the_longest_segment_labels() -> None:
    """Row labels of the size, profile and migration plots sit in a margin estimated from
    their length; measured by matplotlib, with the ticks' padding, they must fit in it (an
    estimate of 7 px per character cut off '6: Older, mid income, moderate spending')."""
    from segmentation_pipeline.core.plots import new_figure, text_margin

    labels = [
        "6: Older, mid income, moderate spending",
        "12: Young, low income, high spending, female",
        "4: High income (income 102k$)",
        "New customers",
    ]
    fig = new_figure(9, 3)
    ax = fig.add_subplot()
    renderer = fig.canvas.get_renderer()
    tick_padding_px = 7 * fig.dpi / 72  # tick length + pad, 3.5 pt each
    for label in labels:
        width = ax.text(0, 0, label, fontsize=10).get_window_extent(renderer).width
        assert text_margin([label], 9) * 9 * fig.dpi >= width + tick_padding_px, label


def test_a_segment_gone_since_the_previous_run_is_in_the_drift_table_by_its_old_name(
    mall_inputs,
) -> None:
    """Segment 3 of the previous run has no customers now: the drift table lists it as gone,
    under the only name it had (before, the table showed this run's segments only)."""
    con = duckdb.connect()
    con.execute("""
        CREATE TABLE segment_profiles AS SELECT * FROM (VALUES
            ('old', 1, 'Low income', 0.5), ('old', 3, 'High income', 0.5),
            ('new', 1, 'Low income', 0.6), ('new', 4, 'Mid income', 0.4))
            t(run_id, segment_id, segment_name, share)""")
    con.execute("""
        CREATE TABLE segment_centroids AS SELECT * FROM (VALUES
            ('old', 1, 'annual_income', 20.0), ('old', 3, 'annual_income', 90.0),
            ('new', 1, 'annual_income', 23.0), ('new', 4, 'annual_income', 60.0))
            t(run_id, segment_id, feature, centroid)""")
    con.execute("""
        CREATE TABLE feature_scaling AS SELECT * FROM (VALUES
            ('new', 'annual_income', 30.0)) t(run_id, feature, std)""")

    drift = drift_against(con, "new", "old")
    profiles = mall_inputs.profiles.head(2).assign(
        segment_id=[1, 4], segment_name=["Low income", "Mid income"]
    )
    report = render_report(replace(mall_inputs, drift=drift, profiles=profiles))

    table = report.markdown.split("### Segment drift")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")][2:]
    assert drift["segment_id"].tolist() == [1, 3, 4]
    assert [row[0].strip("| ") for row in rows] == [
        "1: Low income",
        "3: High income",
        "4: Mid income",
    ]
    assert [row[3].strip() for row in rows] == ["+10.0 pp", "segment gone", "new segment"]
    assert drift["centroid_shift"].iloc[0] == pytest.approx(0.1)


def test_customers_of_a_gone_segment_are_listed_under_its_old_name(mall_inputs) -> None:
    """The largest movements showed a bare "segment 99" beside the drift table's name."""
    drift = pd.DataFrame(
        {
            "segment_id": [1, 99],
            "previous_share": [0.5, 0.5],
            "share": [1.0, None],
            "centroid_shift": [0.1, None],
            "previous_name": ["Low income", "Gone but named"],
        }
    )
    migrations = pd.DataFrame({"from_segment_id": [99], "to_segment_id": [1], "n_customers": [7]})

    report = render_report(replace(mall_inputs, drift=drift, migrations=migrations))

    movements = report.markdown.split("### Largest movements")[1].split("###")[0]
    assert "99: Gone but named" in movements
    assert "segment 99" not in report.markdown


def test_the_segment_scatter_is_drawn_on_the_models_two_features(mall_inputs) -> None:
    """A model on age x spending is drawn on age x spending, its X marks at the centroids;
    with three features or one, on income x spending, marked at the centroids' projection or
    at the segment means (before: always income x spending, the X at mean income)."""
    from segmentation_pipeline.core.plots import segment_centres, segment_plane

    assert segment_plane(["age", "spending_score"]) == ("age", "spending_score")
    assert segment_plane(["spending_score", "annual_income"]) == (
        "annual_income",
        "spending_score",
    )
    for features in (["age", "annual_income", "spending_score"], ["age"], ["age", "gender"]):
        assert segment_plane(features) == ("annual_income", "spending_score")

    centroids = pd.DataFrame(
        {"segment_id": range(5), "age": np.linspace(25, 55, 5), "spending_score": 50.0}
    )
    run = {**mall_inputs.run, "features": ["age", "spending_score"]}
    inputs = replace(mall_inputs, run=run, centroids=centroids)
    centres = segment_centres(inputs, segment_plane(run["features"]))
    assert centres["x"].tolist() == centroids["age"].tolist()
    assert centres["is_centroid"].all()
    assert png_size(render_report(inputs).images["segments"])[0] > 0

    means = segment_centres(
        replace(inputs, centroids=centroids[["segment_id", "age"]]), ("age", "spending_score")
    )
    assert means["y"].tolist() == mall_inputs.profiles["avg_spending_score"].tolist()
    assert not means["is_centroid"].any()
