"""Headless Chromium through Selenium, for tests that need a real browser to render a page.

Debian's packages (``apt-get install chromium chromium-driver``) put the browser and its driver
at fixed paths; selenium is in the dev extra. The browser gets a fresh profile and no background
networking, so a page can only reach what it references itself.

Also a script: ``python tests/browser.py PAGE.html SHOT.png`` saves a full-page screenshot.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = (
    "install it with `apt-get install chromium chromium-driver` and "
    "`pip install -e '.[dev]'` (or `make install`)"
)
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)


def missing_browser() -> str | None:
    """Why a headless browser cannot start here (with how to fix it), or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed; {INSTALL}"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            return f"{path} is missing; {INSTALL}"
    return None


@contextmanager
def open_headless(tmp_dir: Path, width: int = 1200, height: int = 900) -> Iterator[Any]:
    """A Chrome WebDriver on a fresh profile in ``tmp_dir`` that records the console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={Path(tmp_dir) / 'chromium-profile'}"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(html_path: Path, png_path: Path, width: int = 1200) -> Path:
    """A full-page PNG of a local HTML file: the viewport is made as tall as the document."""
    with tempfile.TemporaryDirectory() as profile, open_headless(Path(profile), width) as driver:
        driver.get(Path(html_path).resolve().as_uri())
        height = driver.execute_script("return document.documentElement.scrollHeight")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(png_path)):
            raise RuntimeError(f"could not save a screenshot of {html_path} to {png_path}")
    return Path(png_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/browser.py PAGE.html SHOT.png")
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
