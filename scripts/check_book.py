#!/usr/bin/env python3
"""Open every page of the built book in headless Chromium and check it as a reader would.

For each HTML page under the build folder: it loads without console errors or failed
requests to local files, every <img> has loaded (natural width > 0), every internal link
resolves to an existing file (and anchor, when it names one), and a screenshot is saved.
Uses Debian's Chromium (/usr/bin/chromium) through Playwright's Python package; nothing is
downloaded.  Playwright rather than chromium-driver (WebDriver): it talks to Chromium over the
DevTools protocol, which reports console errors, page errors and failed requests as events.

    python scripts/check_book.py [book/_build/html] [--screenshots build/screenshots]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def internal_target(html: Path, href: str, root: Path) -> tuple[Path, str] | None:
    """The (file, fragment) an href points to inside the book, or None for external links."""
    parsed = urlparse(href)
    if parsed.scheme in ("http", "https", "mailto", "javascript", "data") or parsed.netloc:
        return None
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)), parsed.fragment
    target = (html.parent / unquote(parsed.path)).resolve() if parsed.path else html
    if target.is_dir():
        target = target / "index.html"
    return target, parsed.fragment


def check(root: Path, screenshots: Path, executable: str) -> list[str]:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    pages = sorted(p for p in root.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    if not pages:
        return [f"no HTML pages under {root}"]
    screenshots.mkdir(parents=True, exist_ok=True)
    for stale in screenshots.glob("*.png"):  # a page that is gone leaves no screenshot behind
        stale.unlink()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("requestfailed", lambda request: errors.append(f"failed to load {request.url}")
                if request.url.startswith("file:") else None)
        for html in pages:
            name = html.relative_to(root).as_posix()
            errors.clear()
            page.goto(html.as_uri(), wait_until="load")
            page.wait_for_timeout(300)
            html = Path(unquote(urlparse(page.url).path))  # index.html redirects to the first page
            problems += [f"{name}: console error: {e}" for e in errors]
            broken = page.eval_on_selector_all("img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            problems += [f"{name}: image not loaded: {src}" for src in broken]
            for href in page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))"):
                target = internal_target(html, href, root)
                if target is None:
                    continue
                path, fragment = target
                if not path.exists():
                    problems.append(f"{name}: broken link {href}")
                elif fragment and path.suffix == ".html" and f'id="{fragment}"' not in path.read_text(errors="replace"):
                    problems.append(f"{name}: link {href} names a missing anchor")
            page.screenshot(path=str(screenshots / (name.replace("/", "__").removesuffix(".html") + ".png")), full_page=False)
        browser.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, nargs="?", default=REPO / "book" / "_build" / "html")
    parser.add_argument("--screenshots", type=Path, default=REPO / "build" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not (args.root / "index.html").is_file():
        print(f"error: no book at {args.root} (run `make book` first)", file=sys.stderr)
        return 2
    if shutil.which(args.chromium) is None:
        print(f"error: no Chromium at {args.chromium} (Debian: apt-get install chromium; or pass --chromium PATH)", file=sys.stderr)
        return 2
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("error: playwright is not installed (pip install -e '.[browser]')", file=sys.stderr)
        return 2
    problems = check(args.root.resolve(), args.screenshots, args.chromium)
    for problem in problems:
        print(problem)
    pages = len(list(args.screenshots.glob("*.png")))
    print(f"{'FAILED' if problems else 'ok'}: {pages} page(s) checked, {len(problems)} problem(s); screenshots in {args.screenshots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
