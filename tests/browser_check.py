"""Open a report in headless Chromium (Debian's chromium + chromedriver, driven by selenium; nothing is downloaded),
take a full-page screenshot and list missing sections and images that did not load."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Headings every full report must have: one per mission item, plus the held-out check and the config.
SECTIONS = [
    "Summary", "Part 1A", "Part 1B", "Part 1C", "Comparison: fixed features vs fine-tuning",
    "2A — building X from the data", "2B — minimising the cost by gradient descent", "2C — recommendations",
    "Do recommendations change with the learning rate or the optimiser?", "held-out evaluation", "Configuration and software",
]


@dataclass
class BrowserResult:
    headings: list[str]
    missing_sections: list[str]
    images: int
    broken_images: list[str]
    screenshot: Path


def check_in_browser(html: Path, workdir: Path, width: int = 1366) -> BrowserResult:
    """Load ``html`` like a user on a laptop screen would, then inspect the rendered page."""
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("headless Chromium not installed: apt-get install chromium chromium-driver (.ci/run does this)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    workdir.mkdir(parents=True, exist_ok=True)
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={workdir / 'profile'}", f"--window-size={width},900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    try:
        driver.get(html.resolve().as_uri())
        driver.execute_script("return document.readyState")
        headings = driver.execute_script("return [...document.querySelectorAll('h1,h2,h3,h4')].map(h => h.textContent)")
        images = driver.execute_script(
            "return [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0])")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(int(height), 16000))
        shot = workdir / "report.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    text = " | ".join(headings)
    return BrowserResult(headings=headings, missing_sections=[s for s in SECTIONS if s not in text], images=len(images),
                         broken_images=[alt for alt, ok in images if not ok], screenshot=shot)
