"""The web page loads nothing from outside the server (no CDN, no fonts, no analytics)."""

from __future__ import annotations

import re

import pytest

from serving.app import static_dir

EXTERNAL = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", re.IGNORECASE)


@pytest.mark.parametrize("name", ["index.html", "app.js", "app.css"])
def test_static_files_reference_nothing_external(name: str) -> None:
    text = (static_dir() / name).read_text(encoding="utf-8")
    assert not EXTERNAL.search(text), EXTERNAL.search(text)
    assert "cdn" not in text.lower()


def test_page_wires_its_assets() -> None:
    html = (static_dir() / "index.html").read_text(encoding="utf-8")
    assert 'src="app.js"' in html and 'href="app.css"' in html
    assert 'name="viewport"' in html  # phones
