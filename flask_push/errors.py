"""Exceptions raised by flask-push.

``PushConfigError`` deliberately does not derive from :class:`PushError`: a
misconfigured app should fail loudly at start-up, never be swallowed by a
handler that catches runtime push failures.
"""

from __future__ import annotations

import click


class PushError(Exception):
    """Base class of runtime failures in flask-push."""


class ValidationError(PushError, ValueError):
    """Input that flask-push refuses, from Python or from the HTTP API.

    The HTTP API answers it with ``400`` and the same ``code``, ``message`` and
    ``field``, so a bad value gets the same explanation from both.
    """

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class PayloadError(PushError, ValueError):
    """A notification a platform would refuse (too large, say); refused before sending."""

    def __init__(self, message: str, *, provider: str) -> None:
        super().__init__(message)
        self.provider = provider


class BackplaneError(PushError):
    """The backplane (Redis) could not be reached: a live event was not published,
    or a replay could not be read. Clients that reconnect with ``since`` catch up."""


class PushConfigError(click.ClickException):
    """Bad or missing ``PUSH_*`` configuration, raised by ``init_app``.

    The message names the key and says what to do about it. A ``click`` exception
    (an ``Exception`` like any other elsewhere): raised while ``flask`` loads the app
    for a command, it is shown as one line, ``Error: <message>``, and exit code 1,
    instead of a traceback through Flask's app loader. ``key``: the key the message
    begins with, when it names one.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ProviderNotInstalled(PushConfigError, ImportError):
    """A configured provider needs an optional dependency that is not installed."""

    def __init__(self, provider: str, extra: str, module: str) -> None:
        super().__init__(
            f"{provider} needs the {module!r} package, which is not installed. "
            f"Install it with: {install_command(extra)}"
        )
        self.provider = provider
        self.extra = extra


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` to flask-push as it is installed here: from
    the folder it was installed from, which pip records (PEP 610's
    ``direct_url.json``; flask-push is installed from a checkout), editable if it
    was, else by name."""
    import importlib.metadata
    import json
    import os
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    try:
        recorded = importlib.metadata.distribution("flask-push").read_text("direct_url.json")
        found = json.loads(recorded or "{}")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        found = {}
    if not isinstance(found, dict):
        found = {}
    where = urlsplit(str(found.get("url", "")))
    folder = url2pathname(where.path) if where.scheme == "file" and where.path else ""
    if not folder or not os.path.exists(folder):  # gone since (a build stage's, say)
        return f"pip install 'flask-push[{extra}]'"
    info = found.get("dir_info")
    # an editable install stays one
    editable = isinstance(info, dict) and info.get("editable") is True
    return f"pip install {'-e ' if editable else ''}'{folder}[{extra}]'"
