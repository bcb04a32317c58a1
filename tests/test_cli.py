"""flask push vapid-keys prints config lines that init_app accepts."""

from __future__ import annotations

import re


def test_vapid_keys_prints_pasteable_config(app, make_app):
    result = app.test_cli_runner().invoke(
        args=["push", "vapid-keys", "--subject", "mailto:ops@shop.example"]
    )
    assert result.exit_code == 0, result.output
    lines = dict(re.findall(r'^(PUSH_\w+) = "([^"]+)"$', result.output, re.M))
    assert set(lines) == {"PUSH_VAPID_PRIVATE_KEY", "PUSH_VAPID_PUBLIC_KEY", "PUSH_VAPID_SUBJECT"}
    configured = make_app(**lines)  # the printed lines are a valid configuration
    assert configured.extensions["push"].settings.vapid_public_key == lines["PUSH_VAPID_PUBLIC_KEY"]


def test_vapid_keys_are_fresh_each_time(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["push", "vapid-keys"]).output
    second = runner.invoke(args=["push", "vapid-keys"]).output
    assert first != second
    assert 'PUSH_VAPID_SUBJECT = "mailto:you@example.com"' in first
