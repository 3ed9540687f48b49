"""The Prefect and MLflow UIs in a headless Chromium (Playwright), against real servers.

`prefect server` and `mlflow server` on loopback, both deployments created, a tiny milestone
(majority and TF-IDF on tiny-sentiment) run through `milestone-review` by a process worker;
then, in the browser: the deployments page lists both deployments, the milestone review
artifact renders with its plots (no broken image), the registered model shows the champion
alias and its version page the model card and lineage tags. Each page is saved as a
full-page screenshot under test-outputs/browser/ ($TUNELAB_TEST_OUTPUTS replaces
test-outputs/). Needs Chromium at /usr/bin/chromium (`apt-get install chromium`): skipped
without it, failed when TUNELAB_REQUIRE_BROWSER=1."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import httpx
import pytest
from services import newest_artifact, tiny_plan

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
WAIT_MS = 60_000  # each wait for a single-page app to show what is checked

MILESTONE = "milestone/milestone-review"
DEPLOYMENTS = ("milestone-review", "scheduled-retraining")
REVIEW_KEY = "milestone-review"
MODEL = "tiny-sentiment-classifier"
# The version's lineage tags that must show (registry.VERSION_LINEAGE and the card's own).
LINEAGE = ("dataset", "method", "base_model", "data_version", "config_hash", "git_commit")
ALIAS_CHIP = re.compile(r"^@\s*champion$")  # MLflow's alias tag: "@ champion"

# Every image loaded, none broken; `n`: how many inline PNGs the page must show at least.
IMAGES_DONE = """n => {
  const images = [...document.images];
  const inline = images.filter(i => i.src.startsWith('data:image/png;base64,'));
  return inline.length >= n && images.every(i => i.complete);
}"""
IMAGES = "() => [...document.images].map(i => [i.src.slice(0, 40), i.complete, i.naturalWidth])"
# Single-page apps scroll inside their own panels, so a full-page screenshot would show one
# screen: the viewport grows until the panels that follow it fit; panels of a fixed height
# (a long table) are let out to their full height first.
OVERFLOW = """() => {
  const panels = [...document.querySelectorAll('*')].filter(e => {
    const y = getComputedStyle(e).overflowY;
    return (y === 'auto' || y === 'scroll') && e.scrollHeight > e.clientHeight + 1;
  });
  return Math.max(0, ...panels.map(e => e.scrollHeight - e.clientHeight));
}"""
UNFOLD = """() => {
  for (const e of document.querySelectorAll('*')) {
    const y = getComputedStyle(e).overflowY;
    if ((y === 'auto' || y === 'scroll') && e.scrollHeight > e.clientHeight + 1) {
      e.style.maxHeight = 'none';
      e.style.overflowY = 'visible';
    }
  }
}"""
NEXT_FRAME = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
MAX_HEIGHT = 16_000


def outputs_dir() -> Path:
    root = Path(os.environ.get("TUNELAB_TEST_OUTPUTS") or REPO / "test-outputs")
    folder = root / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed: pip install -e '.[dev]'"
    if not CHROMIUM.exists():
        return (
            f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` "
            "(Debian/Ubuntu; Playwright drives it, no browser download)"
        )
    return None


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Chromium, checked before any server starts (a module fixture comes first)."""
    reason = missing_browser()
    if reason:
        if os.environ.get("TUNELAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (TUNELAB_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(reason)
    return CHROMIUM


@contextlib.contextmanager
def headless(chromium: Path):
    """A headless Chromium. Playwright's sync API runs an event loop in this thread, where
    Prefect's sync calls would return coroutines: talk to Prefect before, not inside."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def grow_to_fit(page) -> None:
    """Grow the viewport until no panel of the page scrolls (at most MAX_HEIGHT pixels)."""
    height = VIEWPORT["height"]
    for _ in range(6):
        extra = page.evaluate(OVERFLOW)
        if extra <= 1 or height >= MAX_HEIGHT:
            return
        height = min(height + extra, MAX_HEIGHT)
        page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
        page.evaluate(NEXT_FRAME)
        if page.evaluate(OVERFLOW) >= extra:  # a panel of its own height: let it out
            page.evaluate(UNFOLD)
            page.evaluate(NEXT_FRAME)


@contextlib.contextmanager
def screenshot(page, name: str):
    """Save the page as test-outputs/browser/<name>.png when the block ends, passed or not."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a screenshot never hides the real failure
            grow_to_fit(page)
            page.screenshot(path=str(outputs_dir() / f"{name}.png"), full_page=True)
            page.set_viewport_size(VIEWPORT)


def markdown_headings(text: str) -> list[str]:
    """The plain text of a Markdown document's headings (inline code and emphasis dropped)."""
    return [
        re.sub(r"[`*_]", "", line.lstrip("#")).strip()
        for line in text.splitlines()
        if re.match(r"#{1,6} ", line)
    ]


def run_tiny_milestone(workspace: Path, worker_log: Path):
    from prefect.deployments import run_deployment

    from flows.deployments import deploy_all

    assert {r["deployment"] for r in deploy_all()} == {
        "milestone/milestone-review",
        "scheduled-retraining/scheduled-retraining",
    }
    parameters = {"config": str(tiny_plan(workspace)), "workdir": str(workspace), "refresh": False}
    flow_run = run_deployment(MILESTONE, parameters=parameters, timeout=900)
    assert flow_run.state.is_completed(), worker_log.read_text()[-3000:]


def test_uis_show_deployments_review_and_registry(chromium, live_services, worker):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client

    from tunelab.lifecycle import registry, tracking
    from tunelab.workspace import Workspace

    prefect_ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    mlflow_ui = os.environ["MLFLOW_TRACKING_URI"].rstrip("/")
    run_tiny_milestone(live_services, live_services / "worker.log")

    with get_client(sync_client=True) as client:
        artifact = newest_artifact(client, REVIEW_KEY)
    assert artifact is not None and artifact.type == "markdown"
    inline = artifact.data.count("](data:image/png;base64,")
    assert inline >= 1, "the review has no inline plot"
    champion = registry.aliases(tracking.setup(Workspace(live_services)), MODEL).get("champion")
    assert champion, f"{MODEL} has no champion"
    version = MlflowClient(mlflow_ui).get_model_version(MODEL, champion)
    assert version.description and all(version.tags.get(tag) for tag in LINEAGE), version.tags

    with headless(chromium) as browser:
        check_uis(browser, prefect_ui, mlflow_ui, artifact, version)


def visible(locator) -> None:
    from playwright.sync_api import expect

    expect(locator).to_be_visible(timeout=WAIT_MS)


def check_uis(browser, prefect_ui: str, mlflow_ui: str, artifact, version) -> None:
    """The four pages, each checked once its content is there, then saved."""
    champion = version.version
    inline = artifact.data.count("](data:image/png;base64,")
    # The UI calls the API its server names in /ui-settings: this server's, not another's.
    ui_api = httpx.get(f"{prefect_ui}/ui-settings", timeout=30).json()["api_url"]
    assert ui_api.rstrip("/") == f"{prefect_ui}/api", f"the Prefect UI calls {ui_api}"

    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(WAIT_MS)

    # 1. Both deployments on the Prefect UI's deployments page.
    with screenshot(page, "prefect-deployments"):
        page.goto(f"{prefect_ui}/deployments")
        for name in DEPLOYMENTS:
            visible(page.get_by_text(name, exact=True).first)

    # 2. The review artifact with its plots, none broken.
    with screenshot(page, "prefect-review-artifact"):
        page.goto(f"{prefect_ui}/artifacts/artifact/{artifact.id}")
        visible(page.get_by_text(str(artifact.id)).first)  # the route is right
        title = markdown_headings(artifact.data)[0]
        visible(page.get_by_role("heading", name=title, exact=True))
        for image in page.locator("img").all():
            image.scroll_into_view_if_needed()
        with contextlib.suppress(Exception):  # the assertions below say what is wrong
            page.wait_for_function(IMAGES_DONE, arg=inline, timeout=WAIT_MS)
        images = page.evaluate(IMAGES)
        shown = [i for i in images if i[0].startswith("data:image/png;base64,")]
        assert len(shown) >= inline, f"{inline} plots in the review, {len(shown)} shown: {images}"
        broken = [i for i in images if not i[1] or i[2] <= 0]
        assert not broken, f"broken images (src, complete, naturalWidth): {broken}"

    # 3a. The registered model: the champion alias on its version's row.
    with screenshot(page, "mlflow-model"):
        page.goto(f"{mlflow_ui}/#/models/{MODEL}")
        row = page.get_by_role("row").filter(
            has=page.get_by_role("link", name=f"Version {champion}", exact=True)
        )
        visible(row.get_by_text(ALIAS_CHIP))

    # 3b. The version: its model card (the description) and its lineage tags.
    with screenshot(page, "mlflow-model-version"):
        page.goto(f"{mlflow_ui}/#/models/{MODEL}/versions/{champion}")
        visible(page.get_by_text(ALIAS_CHIP).first)
        headings = markdown_headings(version.description)
        assert headings, "the model card has no headings"
        for heading in headings:
            visible(page.get_by_role("heading", name=heading, exact=True).first)
        for tag in LINEAGE:
            tag_row = (
                page.get_by_role("row")
                .filter(has=page.get_by_text(tag, exact=True))
                .filter(has_text=version.tags[tag])
            )
            visible(tag_row.first)
