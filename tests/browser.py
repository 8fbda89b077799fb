"""Headless Chromium (Debian's `chromium`) for the report tests: a DOM dump and a screenshot.

Under CI=true a missing chromium fails the test (scripts/install.sh installs it); on a
developer's machine it skips. Each call gets a new, empty profile folder, and the flags keep
Chromium off the network (this machine has none; Chromium would keep trying).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",  # root in CI: Chromium refuses its sandbox as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = "chromium is not installed (scripts/install.sh installs Debian's chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )


def dump_dom(page: Path) -> str:
    """The DOM after the page loaded (its scripts ran), serialized."""
    proc = _run(["--dump-dom", page.absolute().as_uri()])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "<body" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def screenshot(page: Path, png: Path, size: str = "1280,1400") -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    proc = _run([f"--screenshot={png}", f"--window-size={size}", page.absolute().as_uri()])
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    return png


class Dom(HTMLParser):
    """The elements of a DOM dump (tag, attributes) and the text of each element class."""

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[tuple[str, list[str]]] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag not in ("img", "meta", "br", "input", "link"):
            self._open.append((tag, (attributes.get("class") or "").split()))

    def handle_endtag(self, tag):
        for n in range(len(self._open) - 1, -1, -1):
            if self._open[n][0] == tag:
                del self._open[n:]
                break

    def handle_data(self, data):
        for _, classes in self._open:
            for name in classes:
                self.texts.setdefault(name, []).append(data)

    def tags(self, name: str) -> list[dict]:
        return [attrs for tag, attrs in self.elements if tag == name]

    def body(self) -> dict:
        (attrs,) = self.tags("body")
        return attrs

    def text_of(self, css_class: str) -> str:
        return "".join(self.texts.get(css_class, []))
