"""The pages' files as the server sends them (fast, in-process, no browser): every file is local and served.

The behaviour of the pages is tested in a real browser by tests/test_pages.py.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url

from summarizer.serve.http import create_app
from summarizer.serve.pages import STATIC, asset_tag

from .test_api_http import Http

IMPORT = re.compile(r"""(?:from|import)\s+["'](\./[^"']+)["']""")
LINK = re.compile(r"""(?:src|href)="([^"]+)\"""")


def test_index_and_every_file_it_loads_are_served_from_the_package(app_factory, tmp_path):
    http = Http(create_app(app_factory(make_url(f"sqlite:///{tmp_path / 'x.db'}"))))
    index = http.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-store"
    links = [u for u in LINK.findall(index.text) if not u.startswith("#")]
    base = f"/pages/{asset_tag()}/"
    assert f"{base}app.js" in links and f"{base}style.css" in links
    assert all(u.startswith("/") or u.startswith("data:") for u in links), links  # nothing from another host
    modules = {f"{base}{p.name}" for p in STATIC.glob("*.js")}
    for path in sorted(modules):
        response = http.get(path)
        assert response.status_code == 200 and "javascript" in response.headers["content-type"], path
        assert "immutable" in response.headers["cache-control"]  # the tag changes with the files
        for target in IMPORT.findall(response.text):  # every import is a module of the package
            assert f"{base}{target[2:]}" in modules, (path, target)
        code = response.text.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace is a name, not a fetch
        assert "http://" not in code and "https://" not in code, path
    assert http.get(f"{base}nope.js").status_code == 404
    assert http.get("/pages/app.js").status_code == 404  # only under the tag
