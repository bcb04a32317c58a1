"""The registry is the one list of provider kinds: what names a kind elsewhere agrees."""

from __future__ import annotations

from typing import get_args

import pytest

from flask_push import credentials
from flask_push.providers import (
    REGISTRY,
    kind,
    kind_for_platform,
    kinds,
    not_configured_error,
    platforms,
    provider_class,
)
from flask_push.schemas import installation, provider


def test_every_registered_class_declares_its_kind() -> None:
    assert list(kinds()) == list(REGISTRY)
    for name, spec in kinds().items():
        cls = provider_class(name)
        assert cls.name == spec.name == name and cls.spec is spec
    assert credentials.KINDS == kinds() and credentials.FCM is kind("fcm")


def test_the_wire_shapes_name_the_registered_kinds_and_settings() -> None:
    assert set(get_args(provider.Kind)) == set(kinds())
    assert set(get_args(installation.DeviceType)) == set(platforms())
    for name, spec in kinds().items():
        settings = provider.SETTINGS[name].model_fields.values()
        assert {field.alias for field in settings} == {s.name for s in spec.settings}
        assert set(provider.CREATE) == set(provider.ANSWERS) == set(kinds())


def test_installations_go_to_the_kind_of_their_platform() -> None:
    assert {p: kind_for_platform(p) for p in platforms()} == {"ios": "apns", "android": "fcm"}
    assert kind_for_platform("tizen") == "tizen"  # no provider: reported as not configured
    assert not_configured_error("apns").endswith(
        "set PUSH_APNS_KEY, PUSH_APNS_KEY_ID, PUSH_APNS_TEAM_ID and PUSH_APNS_TOPIC"
    )


def test_a_class_that_is_no_provider_is_refused() -> None:
    with pytest.raises(TypeError, match="is not a flask_push Provider"):
        provider_class("flask_push.message:Notification")
