"""The service worker route: rendered from an overridable template, served as JavaScript."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from flask_push import sw

TEMPLATE = Path(sw.__file__).parent / "templates" / "flask_push" / "sw.js"


def _constant(script: str, name: str) -> object:
    line = next(line for line in script.splitlines() if line.startswith(f"const {name} = "))
    return json.loads(line.split(" = ", 1)[1].rstrip(";"))


def test_served_at_the_root_as_javascript(app: Flask) -> None:
    response = app.test_client().get("/push-sw.js")
    assert response.status_code == 200
    assert response.mimetype == "application/javascript"
    assert response.headers["Cache-Control"] == "no-cache"
    assert "Service-Worker-Allowed" not in response.headers  # its scope is / already
    script = response.get_data(as_text=True)
    assert _constant(script, "PREFIX") == "/push"
    assert _constant(script, "SCOPE") == "/"
    with app.app_context():
        key = app.extensions["push"].settings.vapid_public_key
    assert key and _constant(script, "VAPID_PUBLIC_KEY") == key
    for handler in ("install", "activate", "push", "notificationclick", "pushsubscriptionchange"):
        assert f"addEventListener('{handler}'" in script


def test_follows_the_configuration_and_the_mount_point(make_app: Callable[..., Flask]) -> None:
    app = make_app(PUSH_URL_PREFIX="/api/push", PUSH_SERVICE_WORKER_URL="/static/js/sw.js")
    client = app.test_client()
    assert client.get("/push-sw.js").status_code == 404
    response = client.get("/static/js/sw.js", base_url="http://localhost/shop/")
    assert response.status_code == 200
    script = response.get_data(as_text=True)
    assert _constant(script, "PREFIX") == "/shop/api/push"
    # below the root, the worker may still take the whole site: the server says so
    assert response.headers["Service-Worker-Allowed"] == "/shop/"


def test_the_client_is_told_where_the_worker_and_the_apps_root_are(
    make_app: Callable[..., Flask],
) -> None:
    """The browser client reads the API's address from its own, but cannot tell the
    app's root from it (/shop/push is an app at /shop, or PUSH_URL_PREFIX /shop/push):
    it asks, and gets the addresses below the mount point its request came through."""
    app = make_app(PUSH_URL_PREFIX="/api/push", PUSH_SERVICE_WORKER_URL="/static/js/sw.js")
    client = app.test_client()
    assert client.get("/api/push/client-config").get_json() == {
        "root": "/",
        "serviceWorkerUrl": "/static/js/sw.js",
        "scope": "/",
    }
    mounted = client.get("/api/push/client-config", base_url="http://localhost/shop/")
    assert mounted.get_json() == {
        "root": "/shop/",
        "serviceWorkerUrl": "/shop/static/js/sw.js",
        "scope": "/shop/",
    }


def test_behind_a_proxy_that_names_the_prefix(app: Flask) -> None:
    """ProxyFix with X-Forwarded-Prefix: the worker's scope and the client's addresses
    are below the prefix the proxy serves the app at."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1)  # type: ignore[method-assign]
    client = app.test_client()
    forwarded = {"X-Forwarded-Prefix": "/shop"}
    script = client.get("/push-sw.js", headers=forwarded).get_data(as_text=True)
    assert (_constant(script, "PREFIX"), _constant(script, "SCOPE")) == ("/shop/push", "/shop/")
    where = client.get("/push/client-config", headers=forwarded).get_json()
    assert where == {"root": "/shop/", "serviceWorkerUrl": "/shop/push-sw.js", "scope": "/shop/"}


def test_host_templates_override_it(app: Flask, tmp_path: Path) -> None:
    (tmp_path / "flask_push").mkdir()
    (tmp_path / "flask_push" / "sw.js").write_text("// ours, for {{ prefix }}\n")
    app.template_folder = str(tmp_path)
    response = app.test_client().get("/push-sw.js")
    assert response.get_data(as_text=True) == "// ours, for /push"
    assert response.mimetype == "application/javascript"


def test_host_templates_without_it_keep_the_default(app: Flask, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>the host's own page</p>")
    app.template_folder = str(tmp_path)
    script = app.test_client().get("/push-sw.js").get_data(as_text=True)
    assert script.startswith("/* The flask-push service worker")


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [
        ("flask-push.js", "application/javascript"),
        ("flask-push.mjs", "application/javascript"),
        # a browser applies a stylesheet only when it is served as CSS
        ("flask-push.css", "text/css"),
    ],
)
def test_the_browser_client_is_served(app: Flask, name: str, mimetype: str) -> None:
    with app.test_client().get(f"/push/static/{name}") as response:
        assert response.status_code == 200
        assert response.mimetype == mimetype
        served = response.get_data(as_text=True)
    assert served == (TEMPLATE.parents[2] / "static" / name).read_text()


def test_the_stylesheet_ships_in_the_wheel() -> None:
    """The bell links flask-push.css: an installed package must carry it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    shipped = data["tool"]["setuptools"]["package-data"]["flask_push"]
    static = TEMPLATE.parents[2] / "static"
    for name in ("flask-push.js", "flask-push.mjs", "flask-push.css"):
        assert any(fnmatch.fnmatch(f"static/{name}", pattern) for pattern in shipped), name
        assert (static / name).is_file()


def test_a_missing_static_file_is_a_json_404(app: Flask) -> None:
    response = app.test_client().get("/push/static/nope.js")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_a_wrong_method_on_the_service_worker_is_a_json_405(app: Flask, method: str) -> None:
    response = app.test_client().open("/push-sw.js", method=method)
    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]
