"""Load report pages in headless Chromium (Selenium + the system chromedriver) and measure their layout.

Used by test_pages_in_a_browser.py. Needs Debian's ``chromium`` and ``chromium-driver`` packages
(``.ci/run`` installs them) and the ``selenium`` Python package; :func:`start_browser` says which is
missing so the test can skip with that reason. Nothing is downloaded: Selenium is given the
chromedriver binary, so its driver manager never runs.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

MEASURE = """
var out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, boxes: [], images: []};
document.querySelectorAll('body *').forEach(function(el){
  var st = getComputedStyle(el);
  if ((st.overflowX === 'auto' || st.overflowX === 'scroll') && el.scrollWidth > el.clientWidth + 1)
    out.boxes.push({tag: el.tagName, cls: el.className, scrollWidth: el.scrollWidth, clientWidth: el.clientWidth});
});
Array.prototype.forEach.call(document.images, function(img){
  var r = img.getBoundingClientRect();
  out.images.push({src: (img.getAttribute('src') || '').slice(0, 120), cls: img.className, alt: img.alt,
                   natural: img.naturalWidth, shown: r.width, visible: r.width > 0 && r.height > 0});
});
return out;
"""

ALL_LOADED = """
Array.prototype.forEach.call(document.images, function(img){ img.loading = 'eager'; });
document.querySelectorAll('details').forEach(function(d){ d.open = true; });
return Array.prototype.every.call(document.images, function(img){ return img.complete; });
"""


@dataclass
class PageLayout:
    """What one page measured at one window width."""

    url: str
    width: int
    scroll_width: int
    inner_width: int
    scrolling_boxes: list[dict] = field(default_factory=list)  # elements with a horizontal scroll bar
    images: list[dict] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def problems(self, text_images: str = "img:not(.strip)") -> list[str]:
        """Every layout failure the issue names: page overflow, scrolling boxes, shrunken plots, errors."""
        out = []
        if self.scroll_width > self.inner_width:
            out.append(f"page overflows horizontally: scrollWidth {self.scroll_width} > innerWidth {self.inner_width}")
        for box in self.scrolling_boxes:
            out.append(f"<{box['tag'].lower()} class={box['cls']!r}> scrolls horizontally "
                       f"({box['scrollWidth']} > {box['clientWidth']} px)")
        for img in self.images:
            if "strip" in img["cls"].split():  # photo strips of top images: no text in them
                continue
            if img["natural"] == 0:
                out.append(f"image {img['alt'] or img['src']!r} did not load")
            elif img["visible"] and img["shown"] < img["natural"] / 2:
                out.append(f"image {img['alt'] or img['src']!r} shown {img['shown']:.0f} px wide, "
                           f"natural {img['natural']} px: its text is below half size")
        out.extend(f"console: {msg}" for msg in self.console_errors)
        return out


def missing_browser() -> str | None:
    """Why a browser test cannot run here (None when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[test]')"
    if chromium_binary() is None:
        return "no chromium binary on PATH (Debian: apt-get install chromium chromium-driver; .ci/run does)"
    if chromedriver_binary() is None:
        return "no chromedriver on PATH (Debian: apt-get install chromium-driver; .ci/run does)"
    return None


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromedriver_binary() -> str | None:
    return shutil.which("chromedriver")


def start_browser(width: int = 1400, height: int = 900):
    """A headless Chromium driven by Selenium, logging the console; the caller quits it."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium's driver manager must never go online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium_binary()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1",
                "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(chromedriver_binary()))


def set_viewport(driver, width: int, height: int = 900) -> None:
    """Make the layout viewport exactly ``width`` CSS px wide (window size minus the browser chrome)."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return window.innerWidth")
    if inner != width:
        driver.set_window_size(width + (width - inner), height)


def measure(driver, page: Path | str, width: int, timeout: float = 30.0) -> PageLayout:
    """Open ``page`` at a viewport ``width`` px wide, load every image, and measure the layout."""
    url = page.as_uri() if isinstance(page, Path) else page
    set_viewport(driver, width)
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    deadline = time.monotonic() + timeout
    while not driver.execute_script(ALL_LOADED):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    data = driver.execute_script(MEASURE)
    errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    return PageLayout(url, width, data["scrollWidth"], data["innerWidth"], data["boxes"], data["images"], errors)


def screenshot(driver, page: Path, width: int, dest: Path, max_height: int = 6000) -> Path:
    """A full-page PNG of ``page`` at ``width`` px (for looking at the layout by eye)."""
    set_viewport(driver, width)
    driver.get(page.as_uri())
    driver.execute_script(ALL_LOADED)
    time.sleep(0.5)
    height = min(max_height, int(driver.execute_script("return document.documentElement.scrollHeight")))
    set_viewport(driver, width, height)
    time.sleep(0.3)
    driver.save_screenshot(str(dest))
    return dest
