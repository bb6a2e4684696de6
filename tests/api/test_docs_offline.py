"""``/docs`` and ``/redoc`` load their scripts and styles from authsvc itself (an installed
package's files), never from a CDN, and HTML answers carry a strict Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser

import httpx
import pytest

DOC_PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")


class _Assets(HTMLParser):
    """Every URL a page loads, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False
        self._script: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))
        for name in ("spec-url",):
            if values.get(name):
                self.urls.append(str(values[name]))
        if tag == "script" and not values.get("src"):
            self._in_script, self._script = True, []

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self._script.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_script:
            self._in_script = False
            self.inline_scripts.append("".join(self._script))


def parse(html: str) -> _Assets:
    parser = _Assets()
    parser.feed(html)
    return parser


def csp_directives(policy: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def assert_security_headers(response: httpx.Response) -> dict[str, list[str]]:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = csp_directives(response.headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    for name, sources in policy.items():
        for source in sources:
            # Only this origin, inline hashes, data:/blob: (local by construction) and keywords.
            assert source in ("'self'", "'none'", "'unsafe-inline'", "data:", "blob:") or (
                source.startswith("'sha256-")
            ), (name, source)
    return policy


@pytest.mark.parametrize("page", DOC_PAGES)
async def test_doc_pages_reference_only_local_assets(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "cdn" not in html.lower() and "fonts.googleapis" not in html
    assets = parse(html)
    for url in assets.urls:
        assert url.startswith("/") and not url.startswith("//"), url
    policy = assert_security_headers(response)
    # Every inline script is allowed by its hash, and by nothing looser.
    assert "'unsafe-inline'" not in policy["script-src"]
    for script in assets.inline_scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy["script-src"], page
    if page != "/docs/oauth2-redirect":
        assert any(url.endswith(".js") for url in assets.urls), assets.urls


async def test_doc_assets_are_served(client: httpx.AsyncClient) -> None:
    pages = {page: (await client.get(page)).text for page in ("/docs", "/redoc")}
    urls = {url for html in pages.values() for url in parse(html).urls} - {"/openapi.json"}
    kinds = {"js": "javascript", "css": "text/css", "png": "image/png"}
    served = set()
    for url in sorted(urls):
        response = await client.get(url)
        assert response.status_code == 200, url
        extension = url.rsplit(".", 1)[-1]
        assert kinds[extension] in response.headers["content-type"], url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert len(response.content) > 1000, url
        served.add(extension)
    assert served == {"js", "css", "png"}
    swagger = re.search(r'src="([^"]+swagger-ui-bundle\.js)"', pages["/docs"])
    redoc = re.search(r'src="([^"]+redoc\.standalone\.js)"', pages["/redoc"])
    assert swagger and redoc
    assert b"SwaggerUIBundle" in (await client.get(swagger.group(1))).content
    redoc_bundle = (await client.get(redoc.group(1))).content
    assert b"Redoc" in redoc_bundle
    # Its one self-loaded remote URL (the sidebar logo) is replaced by a local empty image.
    assert b"cdn.redoc.ly" not in redoc_bundle
    missing = await client.get(swagger.group(1).rsplit("/", 1)[0] + "/nope.js")
    assert missing.status_code == 404


async def test_every_answer_is_nosniff(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/openapi.json", "/no-such-route", "/users/me"):
        response = await client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
    # JSON answers need no page policy; HTML ones always get one.
    assert "content-security-policy" not in (await client.get("/healthz")).headers
