#!/usr/bin/env python3
"""Open every page of the built book in headless Chromium and check it as a reader would.

For each HTML page under the build folder: it loads without console errors or failed
requests to local files, every <img> has loaded (natural width > 0), every internal link
resolves to an existing file (and anchor, when it names one), and a screenshot is saved at
desktop width (1400 px) and at mobile width (420 px). What a reader would stumble on fails too:

- an element of the text column wider than the column on desktop, unless it scrolls inside a
  box that fits (a wide table), and a page wider than the screen on mobile;
- a printed output cut off at the right (a line longer than its block);
- stderr, a warning or a traceback among the outputs;
- a figure shown narrower than 600 px on desktop without a link to it at full size;
- on the claims page, an evidence cell without a link.
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


DESKTOP, MOBILE = {"width": 1400, "height": 900}, {"width": 420, "height": 900}

# Elements of the text column that stick out past its right edge, outside any box that scrolls.
OVERFLOW_JS = """() => {
  // The text column of a chapter; pages without one (search) are measured against the page.
  const column = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const limit = column.getBoundingClientRect().right + 2;
  const found = [];
  for (const element of column.querySelectorAll('*')) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || box.right <= limit) continue;
    let parent = element.parentElement, contained = false;
    while (parent && parent !== column) {
      const overflow = getComputedStyle(parent).overflowX;
      if (['auto', 'scroll'].includes(overflow) && parent.getBoundingClientRect().right <= limit) { contained = true; break; }
      parent = parent.parentElement;
    }
    if (!contained) found.push(element.tagName.toLowerCase() + ': ' + (element.textContent || '').trim().slice(0, 60));
  }
  return found.slice(0, 3);
}"""
CUT_OUTPUT_JS = """() => Array.from(document.querySelectorAll('div.cell_output pre'))
  .filter(pre => pre.scrollWidth > pre.clientWidth + 2)
  .map(pre => pre.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '').slice(0, 60))"""
STDERR_JS = """() => Array.from(document.querySelectorAll('div.cell_output .stderr, div.cell_output .traceback, div.cell_output pre'))
  .filter(e => e.matches('.stderr, .traceback') || /(^|\\s)(\\w+Warning|Traceback \\(most recent call last\\)):/.test(e.textContent))
  .map(e => e.textContent.trim().slice(0, 80))"""
SMALL_FIGURE_JS = """() => Array.from(document.querySelectorAll('article.bd-article img'))
  .filter(i => i.naturalWidth > 0 && i.getBoundingClientRect().width < 600 && i.naturalWidth > i.getBoundingClientRect().width + 1)
  .filter(i => !(i.closest('a[href]') && i.closest('a[href]').href === i.src))
  .map(i => i.getAttribute('src'))"""
UNLINKED_EVIDENCE_JS = """() => {
  const found = [];
  for (const table of document.querySelectorAll('article.bd-article table')) {
    const heads = Array.from(table.querySelectorAll('thead th')).map(th => th.textContent.trim());
    const column = heads.indexOf('evidence');
    if (column < 0) continue;
    for (const row of table.querySelectorAll('tbody tr')) {
      const cell = row.children[column];
      const links = cell ? Array.from(cell.querySelectorAll('a[href]')).filter(a => a.textContent.trim()) : [];
      if (cell && !links.length) found.push(cell.textContent.trim().slice(0, 60));
    }
  }
  return found;
}"""


def reader_problems(page, name: str) -> list[str]:
    """What a reader would stumble on in the page loaded at desktop width (see the module docstring)."""
    problems = [f"{name}: wider than the text column: {e}" for e in page.evaluate(OVERFLOW_JS)]
    problems += [f"{name}: output cut off at the right: {line!r}" for line in page.evaluate(CUT_OUTPUT_JS)]
    problems += [f"{name}: stderr or warning in an output: {text!r}" for text in page.evaluate(STDERR_JS)]
    problems += [f"{name}: figure under 600 px without a full-size link: {src}" for src in page.evaluate(SMALL_FIGURE_JS)]
    if name == "claims.html":  # a chapter's own table names what is on its page; the claims page must link it
        problems += [f"{name}: evidence without a link: {text!r}" for text in page.evaluate(UNLINKED_EVIDENCE_JS)]
    return problems


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
        page = browser.new_page(viewport=DESKTOP)
        mobile = browser.new_page(viewport=MOBILE)
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
            problems += reader_problems(page, name)
            shot = name.replace("/", "__").removesuffix(".html")
            page.screenshot(path=str(screenshots / f"{shot}.png"), full_page=False)
            mobile.goto(html.as_uri(), wait_until="load")
            mobile.wait_for_timeout(200)
            wide = mobile.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            if wide > 2:
                problems.append(f"{name}: on a {MOBILE['width']} px screen the page is {wide} px wider than the screen")
            mobile.screenshot(path=str(screenshots / f"{shot}.mobile.png"), full_page=False)
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
    pages = len([p for p in args.screenshots.glob("*.png") if not p.name.endswith(".mobile.png")])
    print(f"{'FAILED' if problems else 'ok'}: {pages} page(s) checked, {len(problems)} problem(s); screenshots in {args.screenshots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
