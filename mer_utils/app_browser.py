"""Drive the `mer app` page in a real browser: the system's Chromium through Playwright for Python.

Used by the browser test (tests/test_app_browser.py) and by scripts/benchmark_app.py, so both
upload, click and time the same way. Playwright's own browser download needs the network, so the
browser is Debian's Chromium (``apt-get install chromium``), found by :func:`find_chromium` and
started with ``executable_path``. Playwright is only imported by the caller that launches it: this
module imports without it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

# Environment variable naming the Chromium (or Chrome) executable to drive; default: the PATH.
CHROMIUM_VARIABLE = "MER_CHROMIUM"
# Executables looked for on the PATH, in order (Debian's package installs /usr/bin/chromium).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Longest wait for the page to load, an upload to arrive or an answer to come back (ms): a shared
# 2-core CPU under load answers in seconds, a hung page never does.
WAIT_MILLISECONDS = 180_000
# The page's elements, by the elem_id mer_utils.app gives them.
UPLOAD_INPUT = '#mer-upload input[type="file"]'
UPLOADED_LINK = '#mer-upload [data-testid="download-link"]'
SUMMARY = '#mer-summary [data-testid="markdown"]'
CLIP_BUTTON = "Answer the clip"
# True once the summary shows something (the answer's headline or the one-line error).
SUMMARY_SHOWN = (
    "() => { const m = document.querySelector('#mer-summary [data-testid=\"markdown\"]');"
    " return m !== null && m.innerText.trim().length > 0; }"
)


def find_chromium() -> str | None:
    """The Chromium to drive: $MER_CHROMIUM when set (it must exist), else the first on the PATH, else None."""
    given = os.environ.get(CHROMIUM_VARIABLE)
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"{CHROMIUM_VARIABLE}={given}: no such file (point it at a Chromium)")
        return given
    return next((found for found in map(shutil.which, CHROMIUM_NAMES) if found), None)


@dataclass(frozen=True)
class PageAnswer:
    """What the page showed for one clip and how long it took, as a visitor sees it."""

    summary: str  # the summary's text: the answer's headline and lines, or the one-line error
    upload_seconds: float  # file chosen -> the upload shown in the page
    answer_seconds: float  # "Answer the clip" clicked -> the summary shown


def answer_in_page(
    page, url: str, clip: str | Path, wait_milliseconds: float = WAIT_MILLISECONDS
) -> PageAnswer:
    """Open the page at ``url`` in Playwright ``page``, upload ``clip``, click and wait for the summary.

    A fresh load each time, so the summary shown is this clip's. Raises Playwright's TimeoutError
    when the page does not load, take the upload or answer within ``wait_milliseconds``.
    """
    page.goto(url, timeout=wait_milliseconds)
    button = page.get_by_role("button", name=CLIP_BUTTON)
    button.wait_for(timeout=wait_milliseconds)
    start = time.perf_counter()
    page.locator(UPLOAD_INPUT).set_input_files(str(clip), timeout=wait_milliseconds)
    page.locator(UPLOADED_LINK).wait_for(timeout=wait_milliseconds)
    uploaded = time.perf_counter()
    button.click(timeout=wait_milliseconds)
    page.wait_for_function(SUMMARY_SHOWN, timeout=wait_milliseconds)
    answered = time.perf_counter()
    return PageAnswer(
        summary=page.locator(SUMMARY).inner_text().strip(),
        upload_seconds=uploaded - start,
        answer_seconds=answered - uploaded,
    )
