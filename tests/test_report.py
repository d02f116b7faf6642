"""The published report: glued numbers, figures, no network, and a working interpolation explorer."""

import csv
import json
import re
import shutil

import pytest
from helpers import ROOT

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
    # the probe ran, so it is the primary endpoint; every criterion's interval is quoted
    assert decision["primary_endpoint"] == "generation_fld"
    for name in ("generation_fld", "reconstruction_mse", "small_class_iou", "nearest_neighbour_validity"):
        c = decision["criteria"][name]
        assert f"{c['estimate']:.3g} [{c['ci95'][0]:.3g}, {c['ci95'][1]:.3g}]" in intro, name
        assert c["n_seeds"] == [2, 2], name  # plan --seeds 42,43
    metrics = json.loads((study["phase_dir"] / "analysis" / "latent_metrics.json").read_text())
    v2 = [metrics["models"][name]["posterior"] for name in metrics["arms"]["V2"]]
    assert f"{sum(p['kl_nats_per_element'] for p in v2) / len(v2):.3g}" in intro
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


def _open(browser, url):
    """A page with every request to another host blocked and recorded, like a reader offline."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked, failed = [], []
    page.on("requestfailed", lambda r: failed.append(r.url))

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
