"""A real headless Chromium for the console's browser tests and screenshots: Playwright driving the distribution's
Chromium package (`make setup` installs it when missing; PANTRY_CHROMIUM names another binary), never a browser
downloaded by Playwright (the machines reach only the package registries)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, sync_playwright

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


class NoBrowser(RuntimeError):
    pass


def chromium_path() -> str:
    configured = os.environ.get("PANTRY_CHROMIUM")
    if configured:
        return configured
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise NoBrowser("no Chromium found: `make setup` installs the distribution's package (apt-get install chromium), "
                    "or set PANTRY_CHROMIUM to a Chromium binary")


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def log_in(page: Page, base_url: str, key: str) -> None:
    """Log in to the console as a person would: the form, the key typed, Enter."""
    page.goto(f"{base_url}/console/login")
    page.get_by_label("API key").fill(key)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base_url}/console")
