"""Drive the HTML report in headless Chromium: hover, pin, switch concept and colouring.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the ``selenium`` package
(the ``dev`` extra); skipped with the reason when either is missing. Selenium is pointed at
the system binaries explicitly, so Selenium Manager never downloads anything.

:func:`check_report_page` holds the checks every report must pass (no console error, no
resource fetched, each concept's heatmap answers a hover, the concept selector repaints,
the page is not blank); it runs on a synthetic report here and on the demo's report.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

import report_fixtures as fx
from headpursuit.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
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
        "--window-size=1360,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield browser
    finally:
        browser.quit()


# --- helpers ------------------------------------------------------------------------------


def page_data(driver) -> dict:
    return json.loads(driver.find_element("id", "hp-data").get_attribute("textContent"))


def cell(driver, group: int, index: int):
    return driver.find_element(
        "css selector", f".hp-group[data-group='{group}'] rect[data-i='{index}']"
    )


def hover(driver, element) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(element).perform()


def fills(driver, group: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll("
        "`.hp-group[data-group='${arguments[0]}'] rect.hp-cell`)).map(c => c.getAttribute('fill'))",
        group,
    )


def outlined(driver, group: int) -> int:
    return len(
        driver.find_elements("css selector", f".hp-group[data-group='{group}'] g.hp-outlines rect")
    )


def choose(driver, select_id: str, value: int) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(str(value))


def detail(driver) -> str:
    return driver.find_element("id", "hp-detail").text


def distinct_colours(driver) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 24))


def check_report_page(driver, path: Path) -> dict:
    """The checks every report must pass; returns the page's head data."""
    driver.get(path.resolve().as_uri())
    driver.find_element("tag name", "h1")  # the page parsed
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    data = page_data(driver)
    assert data["groups"], "a report with rankings shows a heatmap"
    previous = None
    for g, group in enumerate(data["groups"]):
        choose(driver, "hp-concept", g)
        visible = [e.get_attribute("data-group") for e in driver.find_elements(
            "css selector", ".hp-group") if e.is_displayed()]  # fmt: skip
        assert visible == [str(g)]
        colours = fills(driver, g)
        assert len(colours) == group["n_layers"] * group["n_heads"]
        assert colours != previous  # switching concept changes the heatmap
        previous = colours
        best = group["quantities"][0]["top"][0]
        name = f"L{best // group['n_heads']}H{best % group['n_heads']}"
        hover(driver, cell(driver, g, best))
        text = detail(driver)
        assert text.startswith(f"{name} — {group['label']}") and "#1" in text
    choose(driver, "hp-concept", 0)
    assert distinct_colours(driver) > 100  # a rendered heatmap, not a blank page
    return data


# --- tests --------------------------------------------------------------------------------


def test_hover_pin_and_switch(driver, tmp_path):
    colors = fx.ranking("colors", 0)
    countries = fx.ranking("countries", 1)
    explained = fx.explanation(colors, extra_token="<b>&")
    artifacts = [colors, fx.ranking("colors", 5, criterion="logit_lens"), countries, explained,
                 fx.explanation(countries), fx.steering(countries)]  # fmt: skip
    path = write_report(artifacts, tmp_path / "report.html", top_k=5, formats=())[0]
    data = check_report_page(driver, path)
    assert [g["label"] for g in data["groups"]] == ["colors", "countries"]

    # Hovering an explained head shows its SOMP tokens, EVR curve and logit-lens tokens.
    item = explained.heads[0]
    index = item.head.layer * fx.N_HEADS + item.head.head
    hover(driver, cell(driver, 0, index))
    text = detail(driver)
    for token in [*item.somp_tokens, *item.lens_tokens]:
        assert token in text
    assert "logit_lens score" in text and "countries #" in text
    curve = driver.find_elements("css selector", "#hp-detail svg.hp-evr circle")
    assert len(curve) == len(item.evr)
    assert not driver.find_elements("css selector", "#hp-detail b")  # "<b>&" stayed text

    # A head nobody explained says how to explain it.
    unexplained = next(i for i in range(fx.N_LAYERS * fx.N_HEADS)
                       if all(h.head.layer * fx.N_HEADS + h.head.head != i
                              for h in explained.heads))  # fmt: skip
    hover(driver, cell(driver, 0, unexplained))
    assert "headpursuit explain --head" in detail(driver)

    # Click pins a head: hovering another keeps it; a second click releases it.
    cell(driver, 0, index).click()
    hover(driver, cell(driver, 0, unexplained))
    assert detail(driver).startswith(str(item.head)) and "pinned" in detail(driver)
    cell(driver, 0, index).click()
    hover(driver, cell(driver, 0, unexplained))
    assert not detail(driver).startswith(str(item.head))

    # Colour by another number: the cells and the framed heads follow it.
    before = fills(driver, 0)
    choose(driver, "hp-quantity", 1)
    assert fills(driver, 0) != before and outlined(driver, 0) == 5
    frames = driver.execute_script(
        "return Array.from(document.querySelectorAll(\".hp-group[data-group='0'] "
        "g.hp-outlines rect\")).map(r => [r.getAttribute('x'), r.getAttribute('y')])"
    )
    size = data["groups"][0]["size"]
    top = data["groups"][0]["quantities"][1]["top"]
    expected = [[str(i % fx.N_HEADS * size + 1), str((fx.N_LAYERS - 1 - i // fx.N_HEADS) * size + 1)]
                for i in top]  # fmt: skip
    assert frames == expected

    # Switching concept offers that concept's numbers only.
    choose(driver, "hp-concept", 1)
    labels = [o.text for o in driver.find_elements("css selector", "#hp-quantity option")]
    assert labels == [q["label"] for q in data["groups"][1]["quantities"]]
    assert "logit_lens score" not in labels


def test_demo_report(driver, tmp_path):
    """What the demo passes (two concepts, explanations, steering, experiments)."""
    path = write_report(fx.demo_artifacts(), tmp_path / "report.html", formats=())[0]
    check_report_page(driver, path)
    body = driver.find_element("tag name", "body").text
    for heading in ("Heads per concept", "Overlap between concepts", "Steering examples",
                    "Experiments: selected heads against matched random controls"):  # fmt: skip
        assert heading in body
    inserted = [m.text for m in driver.find_elements("css selector", "mark.hp-ins")]
    assert inserted == ["grey", "London"]
    # 2 steering runs, and 2 experiments x 2 (k, alpha) x 3 item sets.
    assert len(driver.find_elements("css selector", "svg.hp-hist")) == 2 + 12
    assert len(driver.find_elements("css selector", "svg.hp-hist line.hp-selected")) == 14
