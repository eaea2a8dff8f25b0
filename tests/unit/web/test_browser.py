"""The search page in a real browser: Debian's chromium, headless, driven by selenium through
chromium-driver, against a real `teran-es serve` process over a small OpenMoji collection.

A person types "red heart", waits for the grid, sees the red heart drawing among the hits,
opens it (captions, word boxes drawn over it), and asks for its captions. Screenshots go to
$TERAN_ES_SCREENSHOT_DIR when set (docs/images/serve-*.png were taken so), else tmp_path.

Without chromium the test skips, except where TERAN_ES_REQUIRE_BROWSER=1 (scripts/test sets
it, and .ci/run installs chromium), where it fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REQUIRE_ENV = "TERAN_ES_REQUIRE_BROWSER"


def find_browser() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if Path("/usr/lib/chromium/chromedriver").is_file() else None
    )
    if browser and driver:
        return browser, driver
    message = "no chromium and chromium-driver (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message}; {REQUIRE_ENV}=1 makes this an error", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def browser():
    binary, driver_path = find_browser()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail("selenium is not installed (pip install -e '.[dev]')", pytrace=False)
        pytest.skip("selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,860", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    directory = Path(os.environ.get("TERAN_ES_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_a_person_searches_opens_a_hit_and_finds_captions(tiny_openmoji, serve_processes, browser, screenshots):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url = serve_processes.start("--workdir", str(tiny_openmoji["workdir"]))
    try:
        wait = WebDriverWait(browser, 90)
        browser.get(url + "/")
        wait.until(ec.text_to_be_present_in_element((By.ID, "attribution"), "OpenMoji"))
        browser.find_element(By.ID, "q").send_keys("red heart")
        browser.find_element(By.ID, "k").clear()
        browser.find_element(By.ID, "k").send_keys("8")
        browser.find_element(By.ID, "go").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#grid figure.hit")))
        hits = browser.find_elements(By.CSS_SELECTOR, "#grid figure.hit")
        ids = [h.get_attribute("data-id") for h in hits]
        assert len(ids) == 8
        assert "openmoji-2764" in ids  # the red heart drawing
        captions = [h.find_element(By.CSS_SELECTOR, ".caption").text for h in hits]
        assert "red heart" in captions
        assert hits[0].find_element(By.CSS_SELECTOR, ".rank").text == "1."
        latency = browser.find_element(By.ID, "latency").text
        assert all(stage in latency for stage in ("encode", "recall", "rerank"))
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth === 128)"
        ))
        browser.save_screenshot(str(screenshots / "serve-grid.png"))

        hits[ids.index("openmoji-2764")].click()
        wait.until(ec.visibility_of_element_located((By.ID, "detail")))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#overlay .word-box")))
        wait.until(lambda d: d.execute_script(
            "const i = document.getElementById('detail-image'); return i.complete && i.naturalWidth === 384"
        ))
        assert "red heart" in browser.find_element(By.ID, "detail-captions").text
        words = browser.find_element(By.ID, "detail-words").text
        assert "red" in words and "heart" in words
        assert len(browser.find_elements(By.CSS_SELECTOR, "#overlay .word-box")) == 2
        # the hit's score under the words, as the grid shows it (this model has no query bank)
        score = browser.find_element(By.ID, "detail-score").text
        grid_score = hits[ids.index("openmoji-2764")].find_element(By.CSS_SELECTOR, ".score").text
        assert score.startswith("score ") and score.endswith(" (the alignment)"), score
        assert float(score.split()[1]) == pytest.approx(float(grid_score), abs=0.0015)  # each rounded to 3 places
        shot = screenshots / "serve-detail.png"
        browser.save_screenshot(str(shot))
        with Image.open(shot) as image:
            assert image.size[0] >= 1000
            assert len(image.convert("RGB").resize((64, 64)).getcolors(64 * 64)) > 20  # not a blank page

        browser.find_element(By.ID, "find-captions").click()
        wait.until(ec.visibility_of_element_located((By.ID, "caption-results")))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#caption-list li")))
        assert "heart" in browser.find_element(By.ID, "caption-list").text
        assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    finally:
        serve_processes.stop(url)
