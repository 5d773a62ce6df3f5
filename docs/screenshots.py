"""The screenshots in docs/, taken from a run's report.html in headless Chromium (selenium, as the suite's browser
checks use it): the report's first screen and the movie explorer after a typed query.

Usage: python docs/screenshots.py RUN_FOLDER   (writes docs/report_top.png and docs/explorer.png)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

DOCS = Path(__file__).resolve().parent


def driver(profile: Path, width: int = 1400, height: int = 900) -> webdriver.Chrome:
    opts = Options()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "chromedriver"))


def main(run: Path) -> None:
    page = (run / "report.html").resolve().as_uri()
    with tempfile.TemporaryDirectory() as tmp:
        d = driver(Path(tmp) / "profile")
        try:
            d.get(page)
            d.save_screenshot(str(DOCS / "report_top.png"))  # what a reader sees first, at 1,400 px
            box = d.find_element(By.ID, "explorer-search")
            d.execute_script("arguments[0].scrollIntoView()", d.find_element(By.ID, "movie-explorer"))
            box.click()
            box.send_keys("toy story", Keys.ENTER)
            section = d.find_element(By.ID, "movie-explorer")
            d.set_window_size(1400, section.size["height"] + 200)
            d.execute_script("arguments[0].scrollIntoView()", section)
            section.screenshot(str(DOCS / "explorer.png"))
        finally:
            d.quit()
    print(f"wrote {DOCS / 'report_top.png'} and {DOCS / 'explorer.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
