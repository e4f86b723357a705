"""Open the HTML report in headless Chromium: no console errors, every figure loaded.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the ``selenium`` package
(the ``dev`` extra); skipped with the reason when either is missing. Selenium is pointed at
the system binaries explicitly, so Selenium Manager never downloads anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from headpursuit import Head, HeadRanking
from headpursuit.ranking.explain import Explanation, HeadExplanation
from headpursuit.report import write_report
from headpursuit.steering.comparison import SteeringRun

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _ranking(concept: str, seed: int) -> HeadRanking:
    generator = torch.Generator().manual_seed(seed)
    evr = torch.rand(30, 9, generator=generator, dtype=torch.float64)
    support = torch.randint(0, 1000, (30, 9, 3), generator=generator)
    return HeadRanking(concept, "evr", evr.clone(), evr, support, 3, "toy", "f" * 16, [1, 2, 3])


def _artifacts() -> list:
    explanation = Explanation(
        [HeadExplanation(Head(29, 7), [5, 6], ["white", "<b>&"], [0.1, 0.2], [9], ["queen"], [4])],
        n_atoms=2,
        n_samples=8,
        model_id="toy",
        fingerprint="f" * 16,
    )
    run = SteeringRun(
        heads=[Head(23, 4)],
        alpha=-1.0,
        positions="all",
        controls=[[Head(23, 5)]],
        prompts=["What is the capital of France?"],
        unmodified=["The capital of France is Paris."],
        steered=["The capital of France is London."],
        control_outputs=[["The capital of France is Paris."]],
        model_id="toy",
        fingerprint="f" * 16,
        concept="countries",
    )
    return [_ranking("colors", 0), _ranking("countries", 1), explanation, run]


@pytest.fixture
def driver(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists() and shutil.which(str(CHROMEDRIVER))):
        pytest.skip(
            "headless Chromium not installed: apt-get install -y chromium chromium-driver "
            "(expects /usr/bin/chromium and /usr/bin/chromedriver)"
        )
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium not installed (dev extra)"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def test_report_renders_without_errors(driver, tmp_path):
    written = write_report(_artifacts(), tmp_path / "report.html", top_k=5)
    driver.get(written[0].resolve().as_uri())
    driver.find_element("tag name", "h1")  # the page parsed
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    images = driver.find_elements("css selector", "img.figure")
    assert len(images) == 3  # two EVR heatmaps and the Jaccard overlap
    heatmap = driver.find_element("id", "fig-evr_0_colors")
    assert driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", heatmap
    )
    widths = [driver.execute_script("return arguments[0].naturalWidth", img) for img in images]
    assert all(width > 0 for width in widths)
    # The token "<b>&" is shown as text, not parsed as markup.
    assert "<b>&" in driver.find_element("tag name", "body").text
    assert "London" in driver.find_element("tag name", "body").text
