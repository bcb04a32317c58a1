"""A delivery target as a person names it: "Chrome on Android", "iOS app 2.0".

A browser's subscription is named from the ``User-Agent`` it registered with; an
installation from its device type and app version. The user-agent parser is
small on purpose: it knows the browsers and systems that have push, in the
order that tells them apart (Edge, Opera and Samsung Internet also say
"Chrome"; Chrome says "Safari"), and says "Browser" for the rest.
"""

from __future__ import annotations

import re
from typing import Any

#: (name, pattern) of browsers, the first match wins
_BROWSERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("Edge", r"\bEdg(?:e|A|iOS)?/"),
        ("Opera", r"\bOPR/|\bOPiOS/|\bOpera\b"),
        ("Samsung Internet", r"\bSamsungBrowser/"),
        ("Firefox", r"\bFirefox/|\bFxiOS/"),
        ("Chrome", r"\bChrome/|\bCriOS/|\bChromium/|\bHeadlessChrome/"),
        ("Safari", r"\bVersion/[\d.]+.*\bSafari/|\bSafari/"),
    )
)
#: (name, pattern) of systems, the first match wins (iPadOS before macOS: an
#: iPad's Safari may say "Macintosh")
_SYSTEMS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("Android", r"\bAndroid\b"),
        ("iOS", r"\biPhone\b|\biPod\b"),
        ("iPadOS", r"\biPad\b"),
        ("ChromeOS", r"\bCrOS\b"),
        ("Windows", r"\bWindows\b"),
        ("macOS", r"\bMacintosh\b|\bMac OS X\b"),
        ("Linux", r"\bLinux\b|\bX11\b"),
    )
)

#: an installation's device type as people say it
_DEVICES = {"ios": "iOS", "android": "Android"}


def browser_label(user_agent: str | None) -> str:
    """``"Chrome on Android"`` from a ``User-Agent``; ``"Browser"`` when unknown."""
    if not user_agent:
        return "Browser"
    browser = next((name for name, rx in _BROWSERS if rx.search(user_agent)), "Browser")
    system = next((name for name, rx in _SYSTEMS if rx.search(user_agent)), None)
    return f"{browser} on {system}" if system else browser


def app_label(device_type: str | None, app_version: str | None) -> str:
    """``"iOS app 2.0"`` from an installation's device type and app version."""
    device = _DEVICES.get((device_type or "").lower(), device_type or "Mobile")
    return f"{device} app {app_version}" if app_version else f"{device} app"


def label_of(target: Any) -> str:
    """The label of a subscription or installation row."""
    if hasattr(target, "endpoint"):
        return browser_label(target.user_agent)
    return app_label(target.device_type, target.app_version)
