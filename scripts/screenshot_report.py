"""Screenshot an HTML report in headless Chromium, with a head hovered (for the README).

Usage:
    python scripts/screenshot_report.py headpursuit-demo/report.html docs/report.png
    python scripts/screenshot_report.py report.html out.png --head L23H4 --width 1400 --height 900

Needs Debian's ``chromium`` and ``chromium-driver`` packages and ``selenium`` (the ``dev``
extra). The browser is pointed at the system binaries, so nothing is downloaded. Without
``--head`` the first concept's best head is hovered; ``--section`` scrolls to another part
(``steering``, ``experiments``, ...) before the picture is taken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def open_browser(width: int, height: int, profile: Path):
    """A headless Chromium of the given window size, driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def hover_head(driver, head: str | None) -> None:
    """Move the mouse onto a head's cell (default: the first framed head)."""
    from selenium.webdriver.common.action_chains import ActionChains

    index = driver.execute_script(
        """
        const data = JSON.parse(document.getElementById('hp-data').textContent);
        const group = data.groups[0];
        const wanted = arguments[0];
        if (!wanted) return group.quantities[0].top[0];
        const m = /^L(\\d+)H(\\d+)$/.exec(wanted);
        return m ? Number(m[1]) * group.n_heads + Number(m[2]) : null;
        """,
        head,
    )
    if index is None:
        raise SystemExit(f"error: --head {head!r} is not like L23H4")
    cell = driver.find_element("css selector", f".hp-group[data-group='0'] rect[data-i='{index}']")
    ActionChains(driver).move_to_element(cell).perform()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML report")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--head", help="head to hover, e.g. L23H4 (default: the best)")
    parser.add_argument("--section", help="scroll to this section id first (e.g. steering)")
    parser.add_argument("--width", type=int, default=1360)
    parser.add_argument("--height", type=int, default=960)
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(
            f"error: no report at {args.report}; make one with `headpursuit demo`.", file=sys.stderr
        )
        return 2
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            print(
                f"error: {binary} missing: apt-get install chromium chromium-driver",
                file=sys.stderr,
            )
            return 2
    with tempfile.TemporaryDirectory(prefix="hp-screenshot-") as profile:
        driver = open_browser(args.width, args.height, Path(profile))
        try:
            # The window includes the browser's frame; fix the page's viewport exactly.
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": args.width,
                    "height": args.height,
                    "deviceScaleFactor": 1,
                    "mobile": False,
                },
            )
            driver.get(args.report.resolve().as_uri())
            if driver.find_elements("id", "hp-data"):
                hover_head(driver, args.head)
            if args.section:
                driver.execute_script(
                    "document.getElementById(arguments[0]).scrollIntoView()", args.section
                )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
