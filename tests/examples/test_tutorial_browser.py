"""The tutorial as a user sees it: the Dagster UI in a real (headless) Chromium, driven by selenium.

Opens the peered DAG's asset page before and after an Airflow run, then its Checks tab, and asserts what the
tutorial promises is on screen: the asset, its latest materialization (with the Airflow run's metadata), and
the passing checks. Screenshots go to ``$TUTORIAL_SCREENSHOT_DIR`` when set (``make screenshots`` sets it to
docs/images/, which the tutorial's README shows), else to the test's temporary directory.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make browser`` installs them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from tutorial_helpers import ASSET_KEY, USER_CHECK, TutorialStack

pytestmark = [pytest.mark.integration, pytest.mark.airflow3, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
UI_TIMEOUT_SECONDS = 90


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, no network chatter, and a window big enough for the page."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium/chromium-driver are missing: run `make browser`", pytrace=False)
    profile = tempfile.mkdtemp(prefix="airpeer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-sync",
        "--disable-component-update",
        f"--user-data-dir={profile}",
        "--window-size=1600,1000",
    ):
        options.add_argument(argument)
    # An explicit driver path: selenium would otherwise try to download one (no network here).
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(UI_TIMEOUT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: docs/images/ under `make screenshots`, a temporary directory otherwise."""
    configured = os.environ.get("TUTORIAL_SCREENSHOT_DIR")
    directory = Path(configured) if configured else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def body_text(driver: WebDriver) -> str:
    """The page's visible text."""
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:
        return ""


def wait_for_text(driver: WebDriver, *needles: str, absent: tuple[str, ...] = ()) -> str:
    """Wait until every needle is visible on the page (and none of ``absent`` is); return the page's text."""

    def shown(d: WebDriver) -> str | bool:
        text = body_text(d)
        return text if all(n in text for n in needles) and not any(a in text for a in absent) else False

    try:
        text = str(WebDriverWait(driver, UI_TIMEOUT_SECONDS, poll_frequency=0.5).until(shown))
    except TimeoutException:
        pytest.fail(
            f"the page {driver.current_url} never showed {needles} (without {absent}); it shows:\n"
            f"{body_text(driver)[:3000]}",
            pytrace=False,
        )
    return text


def open_page(driver: WebDriver, url: str) -> None:
    """Open a page of the Dagster UI (the one-time community dialog is dismissed beforehand, see below)."""
    driver.get(url)
    wait_for_text(driver, "rebuild_customers_list", absent=("Join the Dagster community",))


def dismiss_community_dialog(stack: TutorialStack) -> None:
    """Tell Dagster the one-time 'Join the Dagster community' dialog was seen, as its Skip button does.

    The UI shows it over every page of a fresh instance served on 127.0.0.1, some time after the page loads.
    """
    with stack.dagster() as dagster:
        dagster.query("mutation SetNuxSeen { setNuxSeen }")


def assert_on_asset_page(driver: WebDriver) -> None:
    """The page is the DAG asset's: its tabs link to /assets/airflow_instance_one/dag/rebuild_customers_list.

    (The breadcrumb shortens long keys to "... > dag > rebuild_customers_list", so the text alone cannot tell.)
    """
    prefix = "/assets/" + "/".join(ASSET_KEY) + "?view="
    hrefs = driver.execute_script(
        "return Array.from(document.querySelectorAll('a'), a => a.getAttribute('href'))"
    )
    assert any(str(href).startswith(prefix) for href in hrefs), hrefs


def test_asset_page_shows_the_peered_dag_its_materialization_and_checks(
    tutorial_stack: TutorialStack, browser: WebDriver, screenshot_dir: Path
) -> None:
    stack = tutorial_stack
    dismiss_community_dialog(stack)

    with stack.dagster() as dagster:
        fresh = not dagster.materializations(ASSET_KEY)
    if fresh:
        # Stage 1 of the tutorial: the DAG is an asset, not materialized yet.
        open_page(browser, stack.asset_url)
        text = wait_for_text(browser, "Latest materialization", "Never materialized", "Airflow")
        assert "rebuild_customers_list" in text
        assert_on_asset_page(browser)
        browser.save_screenshot(str(screenshot_dir / "tutorial_peered_asset.png"))

    run_id = stack.ensure_success_recorded()

    # After a run: the materialization the sensor recorded, with the Airflow run's metadata.
    open_page(browser, stack.asset_url)
    text = wait_for_text(
        browser, "Latest materialization", run_id, "airflow/run_url", absent=("Never materialized",)
    )
    assert_on_asset_page(browser)
    browser.save_screenshot(str(screenshot_dir / "tutorial_materialized_asset.png"))

    # The Checks tab: both checks listed, the user check passing with its row count. (The built-in
    # airflow_run_status is evaluated by airpeer on a failure and on the recovery after it, not on a success.)
    open_page(browser, f"{stack.asset_url}?view=checks&checkDetail={USER_CHECK}")
    text = wait_for_text(
        browser,
        "Checks (2)",
        "airflow_run_status",
        USER_CHECK,
        "Succeeded",
        "customers.csv exists and has at least one customer.",
        "row_count",
        "Passed",
    )
    assert "20" in text.split("row_count", 1)[1][:40]
    assert_on_asset_page(browser)
    browser.save_screenshot(str(screenshot_dir / "tutorial_check_passed.png"))
