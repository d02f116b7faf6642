"""The published report: glued numbers, figures, no network, and a working interpolation explorer."""

import csv
import html
import json
import re
import shutil

import pandas as pd
import pytest
from helpers import ROOT

from imginav_core.study.numbers import interval, scale_for, sig, table, with_separators

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _best_row(study, name):
    path = study["outputs"] / "experiments" / name / f"{name}_metrics.csv"
    rows = list(csv.DictReader(open(path)))
    return [r for r in rows if r["is_best"] == "1"][-1]


def test_the_introduction_quotes_the_computed_numbers(study):
    intro = (study["html"] / "intro.html").read_text()
    decision = json.loads((study["phase_dir"] / "decision.json").read_text())
    assert decision["summary"].split(":")[0] in intro  # "Choose V1 (deterministic)" or V2
    assert "too little to decide" in intro and decision["verdict"] in intro
    # the probe ran, so it is the primary endpoint; every criterion's interval is quoted, as numbers.py writes
    assert decision["primary_endpoint"] == "generation_fld"
    for name in ("generation_fld", "reconstruction_mse", "small_class_iou", "nearest_neighbour_validity"):
        c = decision["criteria"][name]
        assert html.escape(interval(c["estimate"], *c["ci95"])) in intro, name
        assert c["n_seeds"] == [2, 2], name  # plan --seeds 42,43
    metrics = json.loads((study["phase_dir"] / "analysis" / "latent_metrics.json").read_text())
    v2 = [metrics["models"][name]["posterior"] for name in metrics["arms"]["V2"]]
    assert sig(sum(p["kl_nats_per_element"] for p in v2) / len(v2)) in intro
    assert "V1 42, 43" in intro and "V2 42, 43" in intro
    assert "generated/analysis.ipynb::" not in intro and "ipynb::" not in intro  # every glue reference resolved


def test_the_report_names_no_folder_of_the_machine_that_built_it(study):
    """Paths in the logs, tables and messages are relative to the output root."""
    machine = [str(study["repo"]), str(study["outputs"]), str(ROOT), "/tmp/"]
    for page in study["html"].rglob("*.html"):
        text = page.read_text()
        assert not [m for m in machine if m in text], page.relative_to(study["html"])
    analysis = (study["html"] / "generated" / "analysis.html").read_text()
    assert "OUTPUT_ROOT/phase1_2_vae_test/decision.json" in analysis
    assert "OUTPUT_ROOT" in (study["html"] / "generated" / "arms" / "V1_training.html").read_text()  # its parameters
    # the executed notebook itself keeps what papermill was given
    assert str(study["outputs"]) in (study["phase_dir"] / "runs" / "analysis.ipynb").read_text()


def test_the_report_has_the_using_the_project_part(study):
    html = study["html"]
    for page, words in (("cluster", "ended("), ("bad_input", "skippable"), ("performance", "fast path")):
        assert words in (html / "using" / f"{page}.html").read_text(), page
    assert "Using the project" in (html / "intro.html").read_text()


def test_the_report_has_its_chapters_and_figures(study):
    html = study["html"]
    for page, figures in (("arms/V1_training", 2), ("arms/V2_training", 2), ("diffusion_probe", 2), ("analysis", 8)):
        text = (html / "generated" / f"{page}.html").read_text()
        images = re.findall(r'<img[^>]+src="([^"]+\.png)"', text)
        assert len(images) >= figures, page
        for src in images:
            assert (html / "generated" / page).parent.joinpath(src).resolve().is_file(), src
    assert (html / "_static" / "html-manager" / "embed.js").is_file()
    probe = (html / "generated" / "diffusion_probe.html").read_text()
    assert "Diffusion probe" in probe and "floor (real)" in probe and "fld" in probe  # the scores with floors
    assert "high-frequency share" in probe and "equivariance error" in probe


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed for the browser checks: apt-get install chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        yield b
        b.close()


def _open(browser, url, errors=None, width=1280):
    """A page with every request to another host blocked and recorded, like a reader offline; what
    the page logs as an error (console errors, uncaught exceptions) goes to ``errors``."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    blocked, failed = [], []
    page.on("requestfailed", lambda r: failed.append(r.url))
    if errors is not None:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url)
    page.wait_for_load_state("load")
    return page, blocked, failed


def test_the_report_opens_offline_with_every_figure_rendered(study, browser):
    for target in (
        "index.html",
        "generated/arms/V1_training.html",
        "generated/diffusion_probe.html",
        "generated/analysis.html",
    ):
        page, blocked, failed = _open(browser, (study["html"] / target).as_uri())
        page.wait_for_function("[...document.images].every(i => i.complete)", timeout=20000)
        assert blocked == [] and failed == [], (target, blocked, failed)
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        assert broken == [], target
        assert page.evaluate("document.images.length") >= 2 or target == "index.html"
        page.close()


def test_the_interpolation_explorer_works_without_a_kernel(study, browser):
    page, blocked, failed = _open(browser, (study["html"] / "generated" / "analysis.html").as_uri())
    page.wait_for_selector(".imginav-explorer .noUi-handle", timeout=20000)  # rendered by the HTML manager

    visible = """label => [...document.querySelectorAll('.imginav-stack-' + label + ' img')]
                   .filter(i => i.offsetParent !== null && i.getBoundingClientRect().width > 0).map(i => i.src)"""

    def shown(label):
        return page.evaluate(visible, label)

    before = {m: shown(m) for m in ("V1", "V2")}
    assert all(len(v) == 1 for v in before.values()), before  # one frame of the selected pair per model
    handle = page.locator(".imginav-explorer .noUi-handle").first
    handle.focus()
    for _ in range(5):
        handle.press("ArrowRight")
    # until both models show another frame (or the timeout fails the test)
    page.wait_for_function(
        f"""before => ['V1', 'V2'].every(m => {{
                                  const now = ({visible})(m);
                                  return now.length === 1 && now[0] !== before[m][0]; }})""",
        arg=before,
        timeout=10000,
    )
    after = {m: shown(m) for m in ("V1", "V2")}
    for model in ("V1", "V2"):
        assert len(after[model]) == 1 and after[model] != before[model], model
    assert blocked == [] and failed == []
    page.close()


def test_wide_tables_stay_inside_the_page(study, browser):
    """Every output table (the criteria table with its long "what is compared" cells among them)
    fits the article: nothing runs past it, nothing hides behind a sideways scroll bar."""
    page, _, _ = _open(browser, (study["html"] / "generated" / "analysis.html").as_uri())
    tables = page.evaluate("""() => {
        const article = document.querySelector('article.bd-article') || document.querySelector('main');
        const right = article.getBoundingClientRect().right;
        return [...article.querySelectorAll('.cell_output table')].map(t => ({
            head: t.innerText.slice(0, 40), right: t.getBoundingClientRect().right, limit: right,
            hidden: t.scrollWidth - t.clientWidth,
            parentHidden: t.parentElement.scrollWidth - t.parentElement.clientWidth}));
    }""")
    assert len(tables) >= 5
    too_wide = [t for t in tables if t["right"] > t["limit"] + 1 or t["hidden"] > 1 or t["parentHidden"] > 1]
    assert too_wide == [], too_wide
    assert "what is compared" in page.inner_text("article")
    page.close()


# ---- numbers for humans ------------------------------------------------------------------------


def test_numbers_have_three_significant_figures_separators_and_no_exponent():
    assert [sig(v) for v in (5312.4, 0.0000417, 0.5, 2.97, 69.867, 1.0, 22000, -0.2414, 0.0, float("nan"))] == [
        "5,310",
        "0.0000417",
        "0.5",
        "2.97",
        "69.9",
        "1",
        "22,000",
        "-0.241",
        "0",
        "—",
    ]
    for value in (0.34, 2.97, 0.0143, 1e-4 * 3.21, 123.4, -0.5):  # where %.3g has no exponent, the same digits
        assert sig(value) == f"{value:.3g}"
    assert interval(0.0574, -0.241, 0.473) == "0.0574 [-0.241 to 0.473]"
    assert interval(5312.0, 4170.0, 6780.0) == "5,310 [4,170 to 6,780]"  # no comma between the bounds
    assert (
        with_separators("27 training layouts (< 5000), 32 x 32 pixels")
        == "27 training layouts (< 5,000), 32 x 32 pixels"
    )
    assert with_separators("sha256 5ac95ee5cf39, 0.12345") == "sha256 5ac95ee5cf39, 0.12345"  # hashes, decimals alone


def test_tiny_and_huge_columns_carry_their_scale_in_the_header_and_counts_stay_whole():
    assert scale_for([2.56e-5, 2.54e-5]) == -6 and scale_for([3.21e5, 9.9e5]) == 3 and scale_for([5310, 0.2]) == 0
    shown = table(
        pd.DataFrame(
            {"KL weighted": [2.56e-5, 3e-6], "FLD": [21000.0, 5310.0], "layouts": [12, 22000], "arm": ["V1", "V2"]}
        )
    )
    assert list(shown.columns) == ["KL weighted (× 10⁻⁶)", "FLD (× 10³)", "layouts", "arm"]
    assert shown.iloc[0].tolist() == ["25.6", "21", "12", "V1"] and shown.iloc[1].tolist() == [
        "3",
        "5.31",
        "22,000",
        "V2",
    ]
    rows = table(pd.DataFrame({"V1": [0.00004, 0.5], "V2": [0.00002, float("nan")]}, index=["KL", "IoU"]), by="row")
    assert list(rows.index) == ["KL (× 10⁻⁶)", "IoU"] and rows.loc["IoU"].tolist() == ["0.5", "—"]


# ---- every page of two reports, read as a reader reads them -------------------------------------------

REPORTS = ("study", "sweep_study")  # the demo's shape (2 seeds, no sweep); 5 seeds with the KL-weight sweep
PROGRESS = re.compile(r"it/s\]|epoch \d+/\d+ train:")
NUMBER_WITH_EXPONENT = re.compile(r"(?<![\w.])\d+(?:\.\d+)?e[+-]?\d+(?![\w.])", re.IGNORECASE)
KL_WEIGHT = re.compile(r"[1-9]e-[1-9]")  # a KL weight or a learning rate as the study's files write it: 1e-4

PAGE_FACTS = """() => {
    const article = document.querySelector('article.bd-article');
    const over = [];
    for (const t of article.querySelectorAll('table')) {
        const name = t.innerText.slice(0, 60).replace(/\\s+/g, ' ');
        for (const [what, box] of [['container', t.parentElement], ['table', t]]) {
            if (box.scrollWidth > box.clientWidth + 1)
                over.push(`${what} of "${name}": ${box.scrollWidth} > ${box.clientWidth}`);
        }
        for (const cell of t.querySelectorAll('td, th')) {
            if (cell.scrollWidth > cell.clientWidth + 1)
                over.push(`cell "${cell.innerText.slice(0, 40)}" of "${name}"`);
        }
    }
    const links = [...document.querySelectorAll('.prev-next-area a')].map(a => ({
        title: a.querySelector('.prev-next-title').innerText.trim(), clipped: a.scrollWidth > a.clientWidth + 1}));
    return {title: document.title, h1: [...article.querySelectorAll('h1')].map(h => h.innerText.trim()), links,
            text: article.innerText, cells: [...article.querySelectorAll('td, th')].map(c => c.innerText), over};
}"""


def _pages(html_root):
    """Every page of a built report (index.html only redirects to intro.html)."""
    skip = {"index.html", "genindex.html", "search.html"}
    return sorted(p for p in html_root.rglob("*.html") if "_static" not in p.parts and p.name not in skip)


@pytest.fixture(scope="module", params=REPORTS)
def report_pages(request, browser):
    """Each page of a report as Chromium shows it at 1280 x 900 offline: its title and heading, its
    text, its table cells, what is wider than its column, and what the browser logged as an error."""
    built = request.getfixturevalue(request.param)
    pages = {}
    for path in _pages(built["html"]):
        page, blocked, failed = _open(browser, path.as_uri(), errors := [])
        if path.name == "analysis.html":
            page.wait_for_selector(".imginav-explorer .noUi-handle", timeout=20000)  # the widgets drawn
        page.wait_for_timeout(500)
        facts = page.evaluate(PAGE_FACTS)
        facts["errors"] = errors + [f"blocked {url}" for url in blocked] + [f"failed {url}" for url in failed]
        pages[str(path.relative_to(built["html"]))] = facts
        page.close()
    return request.param, built, pages


def test_no_page_logs_an_error(report_pages):
    name, _, pages = report_pages
    assert {page: facts["errors"] for page, facts in pages.items() if facts["errors"]} == {}, name


def test_no_page_shows_a_progress_log(report_pages):
    name, _, pages = report_pages
    assert [page for page, facts in pages.items() if PROGRESS.search(facts["text"])] == [], name


def test_no_table_or_cell_is_wider_than_its_column(report_pages):
    name, _, pages = report_pages
    assert sum(len(facts["cells"]) for facts in pages.values()) > 500  # the tables are there to be checked
    assert {page: facts["over"] for page, facts in pages.items() if facts["over"]} == {}, name


def test_no_table_cell_is_in_scientific_notation(report_pages):
    name, _, pages = report_pages
    found = {
        page: numbers
        for page, facts in pages.items()
        if (
            numbers := [
                m[0]
                for cell in facts["cells"]
                for m in NUMBER_WITH_EXPONENT.finditer(cell)
                if not KL_WEIGHT.fullmatch(m[0])
            ]
        )
    }
    assert found == {}, name


def test_every_page_has_its_own_title_and_heading(report_pages):
    name, _, pages = report_pages
    titles = [facts["title"] for facts in pages.values()]
    headings = [facts["h1"][0] if facts["h1"] else "" for facts in pages.values()]
    assert all(len(facts["h1"]) == 1 for facts in pages.values()), name
    assert len(set(titles)) == len(titles) and len(set(headings)) == len(headings), name
    links = [link for facts in pages.values() for link in facts["links"]]
    assert [link["title"] for link in links if link["clipped"]] == [], name  # Previous / Next show it whole
    for arm, encoder in (("V1", "deterministic"), ("V2", "VAE")):
        heading = pages[f"generated/arms/{arm}_training.html"]["h1"][0]
        assert heading.startswith(f"{arm} training ({encoder}") and "_seed42" in heading
        assert pages[f"generated/arms/{arm}_training.html"]["title"].startswith(heading)
        assert sum(link["title"] == heading for link in links) == 2  # the Next of the page before, the Previous after


def test_the_kl_sweeps_section_is_there_exactly_when_the_sweep_ran(report_pages):
    name, built, pages = report_pages
    analysis = pages["generated/analysis.html"]["text"]
    swept = name == "sweep_study"
    assert ("Secondary result: the KL weight as a curve" in analysis) == swept
    assert ("Recommendation" in analysis) == swept and ("measure_sweep" in analysis) == swept
    if swept:
        assert "MSE vs V1" in analysis and "1e-3" in analysis  # the curve's table, its weight written as planned
    else:  # not a line of the section: no "no sweep" message in the book either
        assert "no KL-weight sweep" not in analysis and "KL-weight curve" not in analysis
    # the executed notebook keeps the whole section either way (its line says when there was no sweep)
    executed = json.loads((built["phase_dir"] / "runs" / "analysis.ipynb").read_text())
    assert any("Secondary result: the KL weight as a curve" in "".join(c["source"]) for c in executed["cells"])
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert ("no KL-weight sweep in this study's plan" in printed) != swept


def test_the_verdict_is_inside_the_first_screen_of_the_introduction(report_pages, browser):
    name, built, _ = report_pages
    decision = json.loads((built["phase_dir"] / "decision.json").read_text())
    page, _, _ = _open(browser, (built["html"] / "intro.html").as_uri())
    card = page.locator(".imginav-card")
    box = card.bounding_box()
    assert box["y"] + box["height"] < 900, (name, box)  # at 1280 x 900: read without scrolling
    text = card.inner_text()
    assert f"verdict: {decision['verdict']}" in text and text.index("Choose") < text.index("Primary endpoint")
    primary = decision["criteria"]["generation_fld"]
    low, high = (1 + v for v in primary["ci95"])
    assert f"is {sig(1 + primary['estimate'])} x V1's" in text and f"interval {sig(low)} x to {sig(high)} x" in text
    seen = primary["detectable"]
    assert (
        f"at most {sig(seen['at_most'])} x or at least {sig(seen['at_least'])} x V1's to be seen 80 % of the time"
        in text
    )
    assert "Enough data to decide: no, the result is provisional" in text  # a tiny study
    flagged = sum(bool(run["flags"]) for run in primary["guard"].values())
    assert (f"{flagged} of {len(primary['guard'])} runs flagged" if flagged else "no run flagged") in text
    assert f"Protocol: pre-registered (protocol {decision['protocol']['planned_sha256'][:12]}" in text
    page.close()


def test_a_training_chapter_shows_the_values_used_its_curves_first_and_no_log(report_pages):
    name, built, pages = report_pages
    for arm in ("V1", "V2"):
        text = pages[f"generated/arms/{arm}_training.html"]["text"]
        assert "papermill replaces this cell" not in text  # the defaults: hidden in the book
        assert len(re.findall(r"^# Parameters$", text, re.MULTILINE)) == 1 and 'config = "experiments/' in text
        assert text.index("Loss curves") < text.index("Sample reconstructions") < text.index("Metrics per epoch")
        assert "completed after" in text  # the run's summary line stays
    # the log stays where it is read when something went wrong: the executed notebook (and the job's log)
    runs = json.loads((built["phase_dir"] / "study_plan.json").read_text())["runs"]
    executed = (built["phase_dir"] / "runs" / f"{runs[0]['name']}.ipynb").read_text()
    assert PROGRESS.search(executed), name


def test_the_per_epoch_table_has_the_columns_that_matter_at_three_significant_figures(study, browser):
    page, _, _ = _open(browser, (study["html"] / "generated" / "arms" / "V2_training.html").as_uri())
    table = page.locator("table", has_text="selection loss").first
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert headers[:4] == ["epoch", "train loss", "loss", "selection loss"] and "best" in headers
    assert any(h.startswith("KL weighted") for h in headers) and len(headers) <= 13  # not the CSV's 31 columns
    for cell in table.locator("tbody td").all_inner_texts():
        digits = re.sub(r"[^0-9]", "", cell).lstrip("0")
        assert len(digits) <= 3 or "." not in cell, cell  # 3 significant figures; whole numbers stay whole
    page.close()


@pytest.mark.parametrize("width", [1280, 1400, 1920])
def test_the_two_decoded_frames_stay_side_by_side(study, browser, width):
    """V1's and V2's decoded frames on one row at every width down to 1280 px (a narrow page moves
    them together below the two ends, never one under the other); one note above the explorer."""
    page, _, _ = _open(browser, (study["html"] / "generated" / "analysis.html").as_uri(), width=width)
    page.wait_for_selector(".imginav-explorer .noUi-handle", timeout=20000)
    boxes = page.evaluate("""() => ['V1', 'V2'].map(m => {
        const img = [...document.querySelectorAll('.imginav-stack-' + m + ' img')].find(i => i.offsetParent !== null);
        const r = img.getBoundingClientRect(); return {top: r.top, left: r.left, right: r.right}; })""")
    v1, v2 = boxes
    assert abs(v1["top"] - v2["top"]) < 1 and v2["left"] >= v1["right"], (width, boxes)
    assert page.locator(".imginav-note").count() == 1  # one banner: the live explorer is not in the book
    page.close()


def test_the_probes_generated_layouts_fill_the_column(study, browser):
    page, _, _ = _open(browser, (study["html"] / "generated" / "diffusion_probe.html").as_uri())
    widths = page.evaluate("""() => {
        const section = document.getElementById('generated-layouts');
        return [section.querySelector('img').getBoundingClientRect().width, section.getBoundingClientRect().width];
    }""")
    assert widths[0] >= 0.95 * widths[1], widths  # the real and generated grids as wide as the text
    page.close()
