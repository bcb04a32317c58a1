"""The wire shapes, declared once: one mapping of refusals to the contract's error, the
same answers from the Python API and the HTTP API, and the document's limits the
server's own."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from flask import Flask

from flask_push import ValidationError
from flask_push.api.openapi import document
from flask_push.schemas.base import Context, WireModel
from flask_push.schemas.errors import parse
from flask_push.schemas.fields import Topics, UserId
from flask_push.schemas.inbox import InboxItemUpsert
from flask_push.schemas.message import MessageCreate

from conftest import as_user, push


class Inner(WireModel):
    name: UserId


class Outer(WireModel):
    collapse_key: Inner
    items: list[Inner] = []
    by_name: dict[str, Inner] = {}
    topics: Topics | None = None


@pytest.mark.parametrize(
    ("data", "field", "code"),
    [
        ({}, "collapseKey", "required"),
        ({"collapseKey": {"name": None}}, "collapseKey.name", "required"),
        ({"collapseKey": {"name": 5}}, "collapseKey.name", "invalid_type"),
        ({"collapseKey": {"name": ""}}, "collapseKey.name", "invalid_value"),
        ({"collapseKey": {"name": "x" * 256}}, "collapseKey.name", "too_long"),
        ({"collapseKey": {"name": "a\x00b"}}, "collapseKey.name", "invalid_value"),
        # a position in a list is left out of the path; a key of a map is kept
        ({"collapseKey": {"name": "a"}, "items": [{"name": "a"}, {}]}, "items.name", "required"),
        ({"collapseKey": {"name": "a"}, "byName": {"k": {}}}, "byName.k.name", "required"),
        ({"collapseKey": "x"}, "collapseKey", "invalid_type"),
        ({"collapseKey": {"name": "a"}, "topics": ["a b"]}, "topics", "invalid_value"),
        # an unknown field is named first, whatever else is wrong
        ({"collapseKey": {"name": 5}, "colour": 1}, "colour", "unknown_field"),
        ({"collapseKey": {"name": "a", "colour": 1}}, "collapseKey.colour", "unknown_field"),
    ],
)
def test_a_refusal_becomes_the_contracts_error(data: Any, field: str, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse(Outer, data, Context(json=True))
    assert (info.value.field, info.value.code) == (field, code)
    assert info.value.message and "pydantic" not in info.value.message


def test_unknown_fields_name_the_expected_ones() -> None:
    with pytest.raises(ValidationError) as info:
        parse(Outer, {"collapseKey": {"name": "a", "colour": 1}}, Context())
    assert info.value.message == "Unknown field 'colour'; expected one of ['name']."


def test_strict_types_from_json() -> None:
    """JSON "5" is not a number, 1 is not true; a whole 60.0 is 60 (JSON has one number)."""
    good = {"title": "x"}
    for notification, field, code in (
        ({**good, "ttl": "60"}, "notification.ttl", "invalid_value"),
        ({**good, "ttl": True}, "notification.ttl", "invalid_value"),
        ({**good, "ttl": 60.5}, "notification.ttl", "invalid_value"),
        ({**good, "inbox": 1}, "notification.inbox", "invalid_type"),
        ({**good, "title": 5}, "notification.title", "invalid_type"),
        # a name (category, topic, type) that is no string is of the wrong type too
        ({**good, "category": 5}, "notification.category", "invalid_type"),
        ({**good, "category": "a b"}, "notification.category", "invalid_value"),
    ):
        body = {"audience": {"everyone": True}, "notification": notification}
        with pytest.raises(ValidationError) as info:
            parse(MessageCreate, body, Context(json=True))
        assert (info.value.field, info.value.code) == (field, code)
    body = {"audience": {"everyone": True}, "notification": {**good, "ttl": 60.0}}
    assert parse(MessageCreate, body, Context(json=True)).notification.ttl == 60


def test_the_python_api_raises_its_own_error_with_the_same_field_and_code(app_ctx: None) -> None:
    for call, field, code in (
        (lambda: push.send(everyone=True, title="x", ttl=60.0), "ttl", "invalid_value"),
        (
            lambda: push.send(everyone=True, title="x", collapse_key="k" * 256),
            "collapseKey",
            "too_long",
        ),
        (lambda: push.send(everyone=True, title="x", colour="red"), None, None),
        (lambda: push.send(users=["a"], topic="b", title="x"), "audience", "invalid_audience"),
        (lambda: push.send(users=[None], title="x"), "users", "required"),
        (lambda: push.upsert("alice", title="x", notify_type="a b"), "type", "invalid_value"),
        (lambda: push.upsert(None, title="x"), "userId", "required"),  # type: ignore[arg-type]
    ):
        if field is None:  # an unknown keyword is Python's own TypeError
            with pytest.raises(TypeError):
                call()
            continue
        with pytest.raises(ValidationError) as info:
            call()
        assert not isinstance(info.value, pydantic.ValidationError)
        assert (info.value.field, info.value.code) == (field, code)


def test_the_hosts_error_handlers_and_json_provider_are_left_alone(
    make_app: Any,
) -> None:
    """pydantic is imposed on nobody: its errors never reach the host's handlers."""
    app: Flask = make_app()
    seen: list[Exception] = []

    @app.errorhandler(pydantic.ValidationError)
    def host_handler(err: Exception) -> Any:
        seen.append(err)
        return {"host": True}, 418

    response = app.test_client().post(
        "/push/notifications", json={"title": 5}, headers=as_user("alice")
    )
    assert response.status_code == 400
    assert response.get_json() == {
        "error": {"code": "invalid_type", "message": "must be a string", "field": "title"}
    }
    assert seen == []


#: (component, property, JSON Schema keyword, value): limits the hand-written document
#: did not carry, now in it because the models check them
LIMITS = [
    ("MessageNotification", "title", "maxLength", 255),
    ("MessageNotification", "body", "maxLength", 4000),
    ("MessageNotification", "ttl", "maximum", 2_419_200),
    ("MessageNotification", "notifyType", "pattern", "^[A-Za-z0-9_.:\\-]{1,64}$"),
    ("MessageNotification", "collapseKey", "maxLength", 255),
    ("MessageNotification", "idempotencyKey", "maxLength", 255),
    ("InboxItemUpsert", "title", "maxLength", 255),
    ("InstallationCreate", "appId", "maxLength", 255),
]


def _property(doc: dict[str, Any], component: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["components"]["schemas"][component]["properties"][name]
    return found


@pytest.mark.parametrize(("component", "name", "keyword", "value"), LIMITS)
def test_the_documents_limits_are_the_servers(
    component: str, name: str, keyword: str, value: Any
) -> None:
    assert _property(document("/push", server="x"), component, name)[keyword] == value


def test_audience_limits_are_in_the_document() -> None:
    audiences = document("/push", server="x")["components"]["schemas"]["MessageAudience"]
    users = audiences["oneOf"][0]["properties"]["users"]
    assert (users["minItems"], users["maxItems"], users["items"]["maxLength"]) == (1, 10_000, 255)
    query = audiences["oneOf"][2]["properties"]["query"]
    assert query["propertyNames"]["enum"] == ["userId", "deviceType", "appId", "appVersion"]


def test_limits_from_configuration_are_the_apps(make_app: Any) -> None:
    app = make_app(
        PUSH_MAX_TOPICS=7, PUSH_ENDPOINT_HOSTS=["127.0.0.1"], PUSH_ALLOW_HTTP_ENDPOINTS=True
    )
    doc = app.test_client().get("/push/openapi.json").get_json()
    assert _property(doc, "SubscriptionCreate", "topics")["maxItems"] == 7
    endpoint = _property(doc, "SubscriptionCreate", "endpoint")
    assert endpoint["pattern"] == "^https?://[!-~]+$"
    assert "127.0.0.1" in endpoint["description"]


def test_the_upsert_model_is_the_python_apis_arguments() -> None:
    """``push.upsert``'s keywords are the model's fields (``notify_type`` is ``type``)."""
    fields = {name for name in InboxItemUpsert.model_fields} - {"user_id"}
    assert fields == {"id", "notify_type", "title", "body", "url", "data", "is_new", "progress"}
