"""Hostile input to every JSON operation, as a shopper, an administrator and anonymous.

test_openapi.py fuzzes what the document describes, as an administrator. This sweep
sends what no document describes, to every JSON endpoint of the blueprint (its table
:data:`SWEEP` must name each one: a new endpoint fails
:func:`test_the_sweep_covers_every_json_endpoint` until it is added), as a shopper, as
an administrator and anonymously on SQLite, and as an administrator on PostgreSQL
(:data:`DATABASES_AND_IDENTITIES`): bodies that are not
JSON or not an object, wrong content types and encodings, each field missing, another
field, each field of the wrong type or over-long or holding NUL, a lone surrogate or
RTL marks, bad query parameters, and ids in the path that are not ids or are another
user's.

Every answer must be JSON; a refusal a 4xx in the contract's error shape, never a
5xx, with nothing written (the tables read the same before and after); and what was
accepted must read back without an error.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from conftest import as_user, db, push, service_account

SHOPPER = as_user("alice")
ADMIN = as_user("root", admin=True)
#: anonymous too: a browser subscribes before its user signs in, and anyone may click
IDENTITIES = {"shopper": SHOPPER, "admin": ADMIN, "anonymous": as_user(None)}
#: the refusals the contract's table gives these operations (401 only to anonymous)
REFUSALS = {400, 403, 404, 405, 409, 413, 415}

CATEGORIES = {
    "order_status": {"label": "Order updates", "required": True},
    "offers": {"label": "Offers", "channels": ["web", "inbox"], "max_per_day": 3},
    "news": {"label": "News", "default": False},
}
#: an FCM token and an APNs token, as the devices make them
FCM_TOKEN = "fcm-token_" + "a1B2c3D4e5" * 6
APNS_TOKEN = "ab" * 32


@dataclass(frozen=True)
class Op:
    """How to call one endpoint well: ``body`` makes a valid body (None: it takes
    none), ``query`` a valid query, and ``id`` names the kind of row whose id goes in
    the path (a key of :class:`Rows`)."""

    body: Callable[[Rows], dict[str, Any]] | None = None
    query: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    #: what to do before each case, so that a valid body stays valid (not a conflict)
    before_each: Callable[[Rows], None] | None = None


def _subscription(rows: Rows) -> dict[str, Any]:
    return {**rows.make_subscription(), "topics": ["offers"]}


def _installation(rows: Rows) -> dict[str, Any]:
    return {
        "appId": "com.example.shop",
        "deviceToken": FCM_TOKEN,
        "deviceType": "android",
        "subscriptions": ["offers"],
        "badge": 3,
        "timeZone": "Europe/Paris",
        "appVersion": "2.4.1",
    }


def _installation_update(rows: Rows) -> dict[str, Any]:
    return {
        "deviceToken": APNS_TOKEN,
        "subscriptions": ["news"],
        "badge": 1,
        "timeZone": "UTC",
        "appVersion": "2.5",
        "pushToStartToken": "cd" * 32,
    }


def _notification(rows: Rows) -> dict[str, Any]:
    return {
        "id": "export-7",
        "type": "export",
        "title": "Export",
        "body": "40% done",
        "url": "/exports/7",
        "data": {"file": "orders.csv", "rows": [1, 2]},
        "isNew": True,
        "progress": {"total": 100, "processed": 40},
    }


def _preferences(rows: Rows) -> dict[str, Any]:
    return {
        "categories": {"offers": {"web": False, "inbox": True}, "news": {"mobile": True}},
        "quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Europe/Berlin"},
    }


def _message(rows: Rows) -> dict[str, Any]:
    return {
        "audience": {"users": ["alice", "bob"]},
        "notification": {
            "title": "Order #42",
            "body": "Out for delivery",
            "url": "/orders/42",
            "icon": "/icon.png",
            "image": "https://shop.example/van.png",
            "badge": 2,
            "sound": "default",
            "tag": "order-42",
            "data": {"orderId": 42},
            "ttl": 3600,
            "urgency": "high",
            "collapseKey": "order-42",
            "idempotencyKey": None,
            "inbox": True,
            "notifyType": "order_status",
            "category": "offers",
        },
    }


def _provider(rows: Rows) -> dict[str, Any]:
    return {
        "appId": "com.example.other",
        "kind": "fcm",
        "settings": {"credentials": service_account()},
    }


def _nothing(rows: Rows) -> dict[str, Any]:
    return {}


#: every JSON endpoint of the blueprint, by its endpoint name
SWEEP: dict[str, Op] = {
    "push.vapid_public_key": Op(),
    "push.client_config": Op(),
    "push.openapi_document": Op(),
    "push.health": Op(),
    "push.subscribe": Op(body=_subscription),
    "push.unsubscribe": Op(id="subscription"),
    "push.register_installation": Op(body=_installation),
    "push.get_installation": Op(id="installation"),
    "push.update_installation": Op(body=_installation_update, id="ios"),
    "push.delete_installation": Op(id="installation"),
    "push.register_activity_token": Op(
        body=lambda rows: {"activityId": "order-42", "pushToken": "ef" * 32}, id="ios"
    ),
    "push.list_items": Op(query={"onlyNew": "true", "type": "export", "skip": "0", "take": "5"}),
    "push.get_item": Op(id="notification"),
    "push.upsert_item": Op(body=_notification),
    "push.mark_read": Op(body=_nothing, id="notification"),
    "push.mark_all_read": Op(body=_nothing),
    "push.get_preferences": Op(),
    "push.update_preferences": Op(body=_preferences),
    "push.create_message": Op(body=_message),
    "push.list_messages": Op(query={"skip": "0", "take": "5"}),
    "push.get_message": Op(id="message"),
    "push.list_deliveries": Op(
        query={"userId": "alice", "status": "queued", "skip": "0", "take": "5"}, id="message"
    ),
    "push.cancel_message": Op(body=_nothing, id="message"),
    "push.retry_message": Op(body=_nothing, id="message"),
    "push.click": Op(body=lambda rows: {"clickToken": "forged.token"}, id="message"),
    "push.list_providers": Op(),
    "push.create_provider": Op(body=_provider, before_each=lambda rows: rows.no_providers()),
    "push.get_provider": Op(id="provider"),
    "push.update_provider": Op(
        body=lambda rows: {
            "settings": {"projectId": "shop-456", "baseUrl": "https://fcm.example/proxy"}
        },
        id="provider",
    ),
    "push.delete_provider": Op(id="provider"),
    "push.list_targets": Op(id="user"),
    "push.get_user_preferences": Op(id="user"),
}
#: what the blueprint serves that is not JSON: files, Prometheus text, the websocket
NOT_JSON = {"push.static", "push.metrics", "push.serve"}


def _json_endpoints(app: Flask) -> dict[str, tuple[str, str]]:
    """endpoint -> (method, rule) of every JSON endpoint of the push blueprint."""
    found = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("push.") and rule.endpoint not in NOT_JSON:
            (method,) = (rule.methods or set()) - {"HEAD", "OPTIONS"}
            found[rule.endpoint] = (method, rule.rule)
    return found


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    # hundreds of subscriptions from one address: the limit has tests of its own
    return make_app(PUSH_SUBSCRIBE_RATE_LIMIT=None, PUSH_CATEGORIES=CATEGORIES)


def test_the_sweep_covers_every_json_endpoint(app: Flask) -> None:
    """An endpoint added to the blueprint must be added to :data:`SWEEP` too."""
    assert set(_json_endpoints(app)) == set(SWEEP)


class Rows:
    """A row of each kind for alice (the shopper) and one for bob (the other user),
    made through the API, again whenever a case deleted it."""

    def __init__(self, app: Flask, make_subscription: Callable[..., dict[str, Any]]) -> None:
        self.client = app.test_client()
        self.make_subscription = make_subscription
        self.made = 0  # how many rows were made: the tables changed when it changes
        self.ids: dict[tuple[str, str], str] = {}

    def _make(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> str:
        answer = self.client.post(f"/push{path}", json=body, headers=headers)
        assert answer.status_code in (200, 201, 202), answer.json
        self.made += 1
        return str(answer.json["id"])

    def id(self, kind: str, owner: str) -> str:
        """The id of ``owner``'s row of ``kind``, made when there is none."""
        if (kind, owner) not in self.ids:
            self.ids[kind, owner] = self._new(kind, owner)
        return self.ids[kind, owner]

    def no_providers(self) -> None:
        """Delete the providers there are (the ids of made ones are forgotten)."""
        for row in self.client.get("/push/providers", headers=ADMIN).json["items"]:
            self.client.delete(f"/push/providers/{row['id']}", headers=ADMIN)
            self.made += 1
        self.ids = {key: id for key, id in self.ids.items() if key[0] != "provider"}

    def forget(self, kind: str, owner: str) -> None:
        """``owner``'s row of ``kind`` was deleted."""
        self.ids.pop((kind, owner), None)

    def _new(self, kind: str, owner: str) -> str:
        user = as_user(owner)
        if kind == "subscription":
            return self._make("/subscriptions", self.make_subscription(), user)
        if kind == "installation":
            return self._make("/installations", _installation(self), user)
        if kind == "ios":
            ios = {"appId": "com.example.shop", "deviceToken": APNS_TOKEN, "deviceType": "ios"}
            return self._make("/installations", ios, user)
        if kind == "notification":
            return self._make("/notifications", {"id": f"n-{owner}", "title": "Hi"}, user)
        if kind == "message":
            one = {"audience": {"users": [owner]}, "notification": {"title": "Hi"}}
            return self._make("/messages", one, ADMIN)
        if kind == "provider":
            listed = self.client.get("/push/providers", headers=ADMIN).json["items"]
            mine = [row["id"] for row in listed if row["appId"] == f"app.{owner}"]
            if mine:
                return str(mine[0])
            made = {**_provider(self), "appId": f"app.{owner}"}
            return self._make("/providers", made, ADMIN)
        assert kind == "user", kind
        self._new("subscription", owner)  # a user is known by a browser of theirs
        return owner


@pytest.fixture
def rows(app: Flask, make_subscription: Callable[..., dict[str, Any]]) -> Rows:
    return Rows(app, make_subscription)


# -- what goes in ---------------------------------------------------------------------

#: a value of every kind JSON has and some it does not, for any field
HOSTILE_VALUES: list[Any] = [
    "123", 123, -1, 2**63, 10**30, 1.5, 1e308, True, None, {}, {"a": {"b": "c"}}, [],
    ["x"], "", "x" * 300, "x" * 5000, "a\x00b", "\ud800", "x\udc00y", "\u202eevil\u202c",
    "\ufeff", "😀" * 80, "e\u0301", "\n", float("nan"), float("inf"),
]  # fmt: skip
#: values of the shape some fields have, wrong in a way only that shape can be, by
#: the field's name
FIELD_VALUES: dict[str, list[Any]] = {
    "sendAt": [
        "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999+00:00", "2026-02-30T00:00:00Z",
        "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00-23:59", "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00", "2026-01-01", "2026-01-01T00:00:00.99999999999Z",
        "+12026-01-01T00:00:00Z", "２０２６-01-01T00:00:00Z", 1767225600, "now",
    ],
    "timeZone": [
        "Mars/Olympus", "../../etc/passwd", "Europe/Berlin ", "europe/berlin", "Etc/GMT+14",
        "posix/Europe/Berlin", "right/UTC", "Factory", "localtime", "EST5EDT", "/UTC", "UTC/",
        "Europe/Berlin\x00", "Europe//Berlin", "Europe/../Europe/Berlin",
    ],
    "start": ["24:00", "23:60", "7:00", "07:00:00", "-1:00", "٠٧:٠٠", "07:00\n", "0x7:00"],
    "end": ["24:00", "22:00", "99:99", "07:0", "07:00Z", "１０:００"],
    "expirationTime": [-1, 2**63, 253_402_300_799_999, -62_135_596_800_001, 1e20, -1e20, 0.5],
    "ttl": [2**31, 2**63, -1, 0, 10**400],
    "badge": [2**31, 2**63, -(2**31) - 1, 10**400],
    "baseUrl": [
        "http://127.0.0.1/", "https://[::1]/", "https://169.254.169.254/", "file:///etc/passwd",
        "https://fcm.example:0/", "https://fcm.example/\x00", "https://", "ftp://fcm.example/",
    ],
    "url": [
        "javascript:alert(1)", "http://[::1", "https://ex ample.com", "//evil.example",
        "/\\evil.example", "http://%00", "https://a..b/", "https://" + "a" * 3000, "https://例え.jp",
        "https://ex.example:99999/", "https://ex.example:-1/", "/\t/evil.example", "data:,x",
        "HTTPS://EX.EXAMPLE/", "https://user:pw@ex.example/", "https://[fe80::1%25eth0]/",
    ],
    "endpoint": [
        "https://fcm.googleapis.com:99999/x", "https://fcm.googleapis.com./x",
        "https://FCM.googleapis.com/x", "https://fcm.googleapis.com%2F@evil.example/x",
        "https://[::ffff:127.0.0.1]/x", "https://0x7f000001/x", "https://fcm.googleapis.com/\u202e",
        "https://fcm.googleapis.com", "https://fcm.googleapis.com/x#frag", "wss://fcm.googleapis.com/x",
        "https://xn--fcm-.googleapis.com/x", "https://fcm.googleapis.com/" + "x" * 3000,
    ],
    "p256dh": [
        "AAAA", "B" + "A" * 86, "BM4PVF27c42QVs2f4QRsGCdhrOkkTro9WjE1Zyr2suY=", "+/+/", "====",
    ],
    "auth": ["AAAAAAAAAAAAAAAAAAAAAA==", "A" * 20, "A" * 23, "!!!!!!!!!!!!!!!!!!!!!!"],
    "deviceToken": ["٠" * 64, "a" * 31, "g" * 64, "a" * 513, "ab" * 32 + "\n", "ab cd" * 13],
    "pushToken": ["٠" * 64, "ab" * 101, "AB" * 32, "ab" * 31 + "a"],
    "pushToStartToken": ["٠" * 64, "ab" * 101, "zz" * 32],
    "clickToken": ["a.b.c", "." * 100, "x" * 10_000, "eyJhbGciOiJub25lIn0.e30.", "ct_\x00"],
    "urgency": ["HIGH", "very-low", "normal ", "urgent"],
    "audience": [
        {"users": []}, {"users": ["u"] * 10_000}, {"users": [str(n) for n in range(10_001)]},
        {"topic": "offers"}, {"topic": "a_b%"}, {"everyone": True}, {"everyone": False},
        {"users": ["alice"], "topic": "offers"}, {"query": {}},
        {"query": {"userId": {"inq": []}}}, {"query": {"userId": {"nin": []}}},
        {"query": {"userId": {"inq": "alice"}}}, {"query": {"userId": {"eq": None}}},
        {"query": {"userId": {"eq": "a", "neq": "b"}}}, {"query": {"password": "x"}},
        {"query": {"userId": {"$where": "1"}}}, {"query": {"deviceType": {"inq": [1, {}]}}},
        {"query": {"appVersion": {"nin": ["\x00"]}}}, {"query": {"userId": "a%"}},
    ],
    "settings": [
        {"credentials": "not json"}, {"credentials": {}}, {"credentials": "/etc/passwd"},
        {"credentials": service_account(private_key="garbage")},
        {"credentials": service_account(token_uri="file:///etc/passwd")},
        {"credentials": service_account(project_id="a/../b")},
        {"credentials": {**service_account(), "type": "authorized_user"}},
        {"privateKey": "x", "subject": "mailto:a@b"}, {"subject": "javascript:x"},
        {"subject": "mailto:"}, {"subject": "https://"},
    ],
    "kind": ["webpush", "apns", "FCM", "memory", "flask_push.providers.memory.MemoryProvider"],
    "categories": [
        {"order_status": {"web": False}}, {"offers": {"mobile": True}}, {"offers": None},
        {"offers": {"web": None}}, {"offers": {"web": "false"}}, {"offers": {"web": 0}},
        {"nope": {"web": True}}, {"offers": {"sms": True}}, {"offers": []},
    ],
    "quietHours": [
        {}, {"start": "22:00"}, {"start": "22:00", "end": "22:00", "timeZone": "UTC"},
        {"start": "22:00", "end": "07:00", "timeZone": "UTC", "extra": 1},
        {"start": "22:00", "end": "07:00", "time_zone": "UTC"},
    ],
    "progress": [
        {"total": 0, "processed": 1}, {"total": -1, "processed": 0}, {"total": 2**63},
        {"processed": 1e308}, {"total": 10**400, "processed": 1}, {"total": "100"},
    ],
    "data": [
        {"big": 10**400}, {"deep": [[[[[[[[[[[[]]]]]]]]]]]]}, {"\x00": 1}, {"\ud800": 1},
        {"tiny": 5e-324}, {"neg0": -0.0}, {"under": 1e-400}, {"a": "x" * 60_000},
    ],
}  # fmt: skip
#: keys no object should have
HOSTILE_KEYS = ["zzz", "", "a\x00b", "\ud800", "\u202e", "__proto__", "x" * 300]


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path to each field, object and list item within ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield at + (key,)
            yield from _paths(item, at + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield at + (index,)
            yield from _paths(item, at + (index,))


def _objects(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path to each object within ``value``, the body itself first."""
    if isinstance(value, dict):
        yield at
        for key, item in value.items():
            yield from _objects(item, at + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _objects(item, at + (index,))


def _replaced(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(body))
    *parents, last = path
    target = copy
    for key in parents:
        target = target[key]
    target[last] = value
    return copy


def _without(body: Any, path: tuple[Any, ...]) -> Any:
    copy = json.loads(json.dumps(body))
    *parents, last = path
    target = copy
    for key in parents:
        target = target[key]
    del target[last]
    return copy


@dataclass(frozen=True)
class Case:
    what: str
    data: bytes | None = None
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""


def _json(value: Any) -> bytes:
    # json.dumps writes NaN and Infinity as such, and a lone surrogate as "\ud800"
    return json.dumps(value).encode()


def body_cases(body: dict[str, Any]) -> Iterator[Case]:
    """Everything wrong that a body can be, starting from a valid one."""
    for raw in (b"{not json", b"\xff\xfe\x00garbage", b"\x00", b"<html></html>", b"{}}", b" "):
        yield Case(f"not JSON {raw!r}", raw)
    for top in ("[]", "[1]", '"text"', "1", "-1.5", "null", "true", "NaN", "1e400"):
        yield Case(f"top-level {top}", top.encode())
    yield Case("empty body", b"")
    yield Case("a body of spaces", b"   \n")
    yield Case("JSON Lines", _json(body) + b"\n" + _json(body))
    valid = _json(body)
    for content_type in (
        None, "text/plain", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x", "application/xml", "application/json-seq",
        "application/json; charset=latin-1", "application/json; charset=utf-16",
        "application/merge-patch+json", "application/vnd.api+json", "APPLICATION/JSON",
        "application/json; charset=", "application/json;;;", "*/*",
    ):  # fmt: skip
        yield Case(f"content type {content_type}", valid, content_type)
    yield Case("gzip", gzip.compress(valid), headers={"Content-Encoding": "gzip"})
    yield Case("deflate declared, plain sent", valid, headers={"Content-Encoding": "deflate"})
    yield Case("UTF-16 with a BOM", json.dumps(body).encode("utf-16"))
    yield Case("UTF-8 with a BOM", b"\xef\xbb\xbf" + valid)
    latin = json.dumps({**body, "x": "é"}, ensure_ascii=False)
    yield Case("Latin-1 bytes", latin.encode("latin-1"))
    yield Case("CESU surrogate bytes", valid[:-1] + b', "k": "\xed\xa0\x80"}' if body else valid)
    for path in _paths(body):
        yield Case(f"without {path}", _json(_without(body, path)))
        for value in HOSTILE_VALUES + FIELD_VALUES.get(str(path[-1]), []):
            yield Case(f"{path} = {value!r:.40}", _json(_replaced(body, path, value)))
        if isinstance(path[-1], str):
            # the same value under another spelling of the field's name
            yield Case(f"{path} as snake_case", _json(_renamed(body, path)))
    for at in _objects(body):
        for key in HOSTILE_KEYS:
            extra = _replaced(body, (*at, key), "x") if at else {**body, key: "x"}
            yield Case(f"extra key {key!r:.20} at {at}", _json(extra))
    yield Case("every field null", _json({key: None for key in body}))
    yield Case("over the size limit", _json({**body, "pad": "x" * 70_000}))
    # more digits than Python parses (sys.get_int_max_str_digits)
    yield Case("an int of 5,000 digits", b'{"n": ' + b"9" * 5000 + b"}")
    yield Case("every field a list", _json({key: [value] for key, value in body.items()}))


def _renamed(body: Any, path: tuple[Any, ...]) -> Any:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in path[-1])
    copy = _without(body, path)
    *parents, _ = path
    target = copy
    for key in parents:
        target = target[key]
    value = body
    for key in path:
        value = value[key]
    target[snake] = value
    return copy


#: query strings no operation takes, or takes only this way
BAD_QUERIES = [
    "skip=-1", "take=-1", "take=0", "take=10000000000000000000000000000000", "take=abc",
    "skip=1e3", "take=1.5", "skip=%00", "take=%F0%9F%98%80", "skip=0x10", "take=+5",
    "take= 5", "skip=1&skip=2", "take=5&take=6", "onlyNew=maybe", "onlyNew=",
    "type=", "type=%00", "type=a%00b", "type=%ED%A0%80", "type=" + "t" * 300,
    "userId=%00", "userId=" + "u" * 300, "userId=", "status=nope", "status=",
    "zzz=1", "%00=1", "%ED%A0%80=1", "=1", "&&&", "take", "skip[]=1", "a" * 3000 + "=1",
]  # fmt: skip


def query_cases(op: Op, rows: Rows) -> Iterator[Case]:
    valid = "&".join(f"{key}={value}" for key, value in op.query.items())
    # a write has its valid body, so that the query is what is wrong
    body = (_json(op.body(rows)), "application/json") if op.body else (None, None)
    for query in BAD_QUERIES:
        yield Case(f"?{query:.40}", *body, query=query)
        if valid:
            yield Case(f"?{valid}&{query:.40}", *body, query=f"{valid}&{query}")


#: ids in the path that name nothing, or cannot
BAD_IDS = [
    "abc", "0", "-1", "9" * 400, "1.5", "%00", "a%00b", "%F0%9F%98%80", "%ED%A0%80", "%FF",
    "%2F", "..", "%2E%2E", "x" * 5000, "%20", "null", "undefined", "[object Object]",
    "1%0A2", "%E2%80%AEabc",
]  # fmt: skip


# -- what must come out ---------------------------------------------------------------


def _strict_json(raw: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def _snapshot() -> dict[str, Any]:
    """Every row of every table of flask-push, as the database driver reads them, or
    on PostgreSQL a digest of their text that the server makes (taken after every
    case: through the DBAPI cursor it costs a tenth as much, and the digest spares
    the reading of every JSON column, which grow with each message made)."""
    connection = db.session.connection().connection.dbapi_connection
    assert connection is not None
    digest = db.engine.dialect.name == "postgresql"
    cursor = connection.cursor()
    tables = {}
    for table in push.models.Subscription.metadata.sorted_tables:
        if table.name.startswith("push_"):
            key = ", ".join(f'"{column.name}"' for column in table.primary_key.columns)
            if digest:
                cursor.execute(
                    f"SELECT count(*), md5(string_agg(t::text, chr(10) ORDER BY {key})) "
                    f'FROM "{table.name}" AS t'
                )
            else:
                cursor.execute(f'SELECT * FROM "{table.name}" ORDER BY {key}')
            tables[table.name] = cursor.fetchall()
    cursor.close()
    db.session.rollback()
    return tables


class Judge:
    """Sends cases and notes every answer that breaks the rules, instead of stopping at
    the first: one run shows all there is."""

    def __init__(self, app: Flask, rows: Rows, refusals: set[int]) -> None:
        self.app, self.rows, self.refusals = app, rows, refusals
        self.client = app.test_client()
        self.faults: list[str] = []
        self.made = -1

    def send(self, method: str, path: str, case: Case, headers: dict[str, str]) -> int:
        if self.made != self.rows.made:  # rows were made since the last look
            self.made = self.rows.made
            with self.app.app_context():
                self.before = _snapshot()
        sent = {**headers, **case.headers}
        if case.content_type is not None:
            sent["Content-Type"] = case.content_type
        url = f"{path}?{case.query}" if case.query else path
        answer = self.client.open(url, method=method, data=case.data, headers=sent)
        said = f"{method} {url[:80]} [{case.what}] -> {answer.status_code}"
        raw = answer.get_data()
        if answer.status_code >= 400 and answer.status_code not in self.refusals:
            self.faults.append(f"{said}: {raw[:300]!r}")
        if answer.status_code == 204:
            if raw:
                self.faults.append(f"{said}: a body with 204")
        elif answer.mimetype != "application/json":
            self.faults.append(f"{said}: {answer.mimetype} {raw[:200]!r}")
            return answer.status_code
        else:
            try:
                parsed = _strict_json(raw)
            except ValueError as err:
                self.faults.append(f"{said}: not JSON ({err}): {raw[:200]!r}")
                return answer.status_code
            if answer.status_code >= 400:
                error = parsed.get("error") if isinstance(parsed, dict) else None
                if not (isinstance(error, dict) and error.get("code") and error.get("message")):
                    self.faults.append(f"{said}: not the error shape: {raw[:200]!r}")
        with self.app.app_context():
            after = _snapshot()
        if answer.status_code >= 400 and after != self.before:
            changed = [name for name in after if after[name] != self.before.get(name)]
            self.faults.append(f"{said}: refused, yet {changed} changed")
        self.before = after
        return answer.status_code


def _reads_back(judge: Judge, rows: Rows) -> None:
    """What the sweep stored reads back without an error, through every reading
    operation, as its owner and as an administrator."""
    ok = Case("read back", None, None)
    with judge.app.app_context():
        newest = sa.select(push.models.Message.id).order_by(push.models.Message.created_at.desc())
        messages = db.session.execute(newest.limit(10)).scalars().all()
        installations = db.session.execute(sa.select(push.models.Installation)).scalars().all()
        owned = [(row.id, row.user_id) for row in installations]
        db.session.rollback()
    for user in ("alice", "bob", "root"):
        for path in ("/notifications", "/preferences"):
            judge.send("GET", f"/push{path}", ok, as_user(user))
        for installation, owner in owned:
            judge.send("GET", f"/push/installations/{installation}", ok, as_user(owner))
    for path in ("/messages?take=100", "/providers", "/users/alice/targets", "/health"):
        judge.send("GET", f"/push{path}", ok, ADMIN)
    for message in messages:
        judge.send("GET", f"/push/messages/{message}", ok, ADMIN)
        judge.send("GET", f"/push/messages/{message}/deliveries?take=100", ok, ADMIN)


def _path(rule: str, id: str) -> str:
    return rule.replace("<id>", id)


#: every identity on SQLite, the default; on PostgreSQL, whose text and number columns
#: refuse what SQLite stores (NUL, integers past 64 bits), the administrator, who may
#: call every operation (the sweep is a tenth of the suite's CPU: not all of it twice)
DATABASES_AND_IDENTITIES = [
    *(("sqlite", identity) for identity in IDENTITIES),
    ("postgresql", "admin"),
]


@pytest.mark.parametrize(("database", "identity"), DATABASES_AND_IDENTITIES, indirect=["database"])
@pytest.mark.parametrize("endpoint", sorted(SWEEP))
def test_hostile_input_is_refused_cleanly(
    app: Flask, rows: Rows, endpoint: str, identity: str
) -> None:
    method, rule = _json_endpoints(app)[endpoint]
    op, headers = SWEEP[endpoint], IDENTITIES[identity]
    anonymous = not headers
    judge = Judge(app, rows, REFUSALS | {401} if anonymous else REFUSALS)

    def send(case: Case) -> None:
        if op.before_each is not None:
            op.before_each(rows)
        # on a row of the shopper's own, made again when a case deleted it
        if op.id is None:
            judge.send(method, rule, case, headers)
            return
        status = judge.send(method, _path(rule, rows.id(op.id, "alice")), case, headers)
        if method == "DELETE" and status < 300:
            rows.forget(op.id, "alice")

    if op.body is not None:
        for case in body_cases(op.body(rows)):
            send(case)
    for case in query_cases(op, rows):
        send(case)
    if op.id is not None:
        # a write has its valid body, so that the id is what is wrong
        body = (_json(op.body(rows)), "application/json") if op.body else (None, None)
        for bad in BAD_IDS:
            judge.send(method, _path(rule, bad), Case(f"id {bad:.20}", *body), headers)
        theirs = Case("another user's id", *body)
        status = judge.send(method, _path(rule, rows.id(op.id, "bob")), theirs, headers)
        if identity != "admin":
            refused = (401, 403, 404) if anonymous else (403, 404)
            assert status in refused, f"{method} {rule}: bob's row answered {status}"
    _reads_back(judge, rows)
    assert not judge.faults, "\n".join(judge.faults[:60]) + f"\n({len(judge.faults)} in all)"
