"""OpenAPI 3.1 document of the JSON API (CONTRACT.md section 3).

The document describes the routes that :mod:`flask_push.api` registers, with the
limits of :mod:`flask_push.validation`, :mod:`flask_push.inbox` and
:mod:`flask_push.credentials`, and the shapes of the models' ``to_json``.
``tests/test_openapi.py`` keeps it honest: every route is in it, and a
schemathesis run checks that no answer contradicts it.
"""

from __future__ import annotations

import re
from typing import Any

from .. import credentials, inbox, sending, validation
from ..message import URGENCIES
from . import messages

Schema = dict[str, Any]


def ecma(pattern: re.Pattern[str]) -> str:
    """A validator's regex in JSON Schema's (ECMA-262) spelling: ``\\Z`` is ``$`` there."""
    return pattern.pattern.replace(r"\Z", "$")


JSON = "application/json"
MAX_TEXT = 255
#: the patterns the validators use, so that the two cannot drift apart
TOPIC_PATTERN = ecma(validation.TOPIC)
ITEM_ID_PATTERN = ecma(inbox.ITEM_ID)
TYPE_PATTERN = ecma(inbox.NOTIFY_TYPE)
APNS_TOKEN_PATTERN = ecma(validation.APNS_TOKEN)
FCM_TOKEN_PATTERN = ecma(validation.FCM_TOKEN)
APPLE_ID_PATTERN = ecma(credentials.APPLE_ID)
BUNDLE_ID_PATTERN = ecma(credentials.BUNDLE_ID)
#: ``?type=a,b``: types separated by commas; empty parts are ignored
TYPE_LIST_PATTERN = r"^[A-Za-z0-9_.:\-]{0,64}(?:,[A-Za-z0-9_.:\-]{0,64})*$"
#: a contact URI (the server strips whitespace around it first)
SUBJECT_PATTERN = r"^[\s\x1c-\x1f\x85]*(?:mailto:|https://)"
#: ``datetime`` cannot go past the year 9999
MAX_EPOCH_MS = 253_402_300_800_000

DESCRIPTION = """\
Push subscriptions, mobile installations, the per-user notification inbox and
push provider credentials.

**Identity.** There is no API key or token: every request is identified by the
host application's own session (usually its session cookie), through the
callbacks the host registers with `push.identity_loader` (the signed-in user's id)
and `push.admin_loader` (may this request use the admin endpoints?). Endpoints
that need a user answer 401 without one; admin endpoints answer 403 to anyone
else. Rows of another user answer 404, as if they did not exist.

**Requests.** Every POST and PATCH must be sent with
`Content-Type: application/json` (415 otherwise), even without a body, and its
body is limited to `PUSH_MAX_REQUEST_BYTES` (413 above). A body is a JSON object,
nested at most 64 levels, with finite numbers; request objects refuse unknown
fields (400 `unknown_field`), and text, at any depth of a JSON field such as
`data` (object keys included), may not contain NUL characters or unpaired
surrogates (`"\\ud800"`).

**Errors** are always `{"error": {"code", "message", "field"?}}`.
"""


# -- schema helpers -------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or ``null``."""
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        result = {**schema, "type": [*kinds, "null"]}
        if "enum" in schema:
            result["enum"] = [*schema["enum"], None]
        return result
    return {"anyOf": [schema, {"type": "null"}]}


def string(
    description: str | None = None,
    *,
    min_length: int | None = 1,
    max_length: int | None = None,
    pattern: str | None = None,
    fmt: str | None = None,
    enum: list[str] | None = None,
) -> Schema:
    schema: Schema = {"type": "string"}
    options = {
        "minLength": min_length,
        "maxLength": max_length,
        "pattern": pattern,
        "format": fmt,
        "enum": enum,
        "description": description,
    }
    schema.update({key: value for key, value in options.items() if value is not None})
    return schema


def integer(
    description: str | None = None, *, minimum: int | None = None, maximum: int | None = None
) -> Schema:
    schema: Schema = {"type": "integer"}
    options = {"minimum": minimum, "maximum": maximum, "description": description}
    schema.update({key: value for key, value in options.items() if value is not None})
    return schema


def array(items: Schema, *, max_items: int | None = None, unique: bool = False) -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if max_items is not None:
        schema["maxItems"] = max_items
    if unique:
        schema["uniqueItems"] = True
    return schema


def obj(
    properties: dict[str, Schema],
    *,
    required: tuple[str, ...] | list[str] = (),
    description: str | None = None,
    closed: bool = True,
) -> Schema:
    """An object; ``closed`` objects have no properties but ``properties``."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def timestamp(description: str | None = None) -> Schema:
    return string(description, fmt="date-time", min_length=None)


def row_id(prefix: str) -> Schema:
    return string(
        f"`{prefix}_` and a ULID.", min_length=None, pattern=rf"^{prefix}_[0-9A-HJKMNP-TV-Z]{{26}}$"
    )


def all_required(schema: Schema) -> Schema:
    """Every property of a response object is always present (maybe null)."""
    return {**schema, "required": list(schema["properties"])}


# -- components -------------------------------------------------------------------


def topics_schema(max_topics: int) -> Schema:
    names = array(string(pattern=TOPIC_PATTERN), max_items=max_topics)
    return nullable(names) | {
        "description": "Names of the topics to receive; null or absent means none. "
        "Stored sorted, without duplicates; at most PUSH_MAX_TOPICS.",
    }


def json_data() -> Schema:
    return {
        "type": "object",
        "description": "Any JSON object: finite numbers, and no NUL or unpaired surrogate "
        "in any string or key.",
    }


def error_schema() -> Schema:
    detail = obj(
        {
            "code": string(
                "A stable snake_case code such as `unknown_field`.", pattern="^[a-z0-9_]+$"
            ),
            "message": string("A sentence for a human."),
            "field": string("The request field (dotted path) or query parameter at fault."),
        },
        required=("code", "message"),
    )
    return obj({"error": detail}, required=("error",))


def subscription_schemas(max_topics: int) -> dict[str, Schema]:
    keys = obj(
        {
            "p256dh": string(
                "The browser's P-256 ECDH public key: a 65-byte uncompressed point on the "
                "curve, base64url.",
                max_length=256,
            ),
            "auth": string(
                "The browser's 16-byte authentication secret, base64url.",
                max_length=256,
            ),
        },
        required=("p256dh", "auth"),
    )
    create = obj(
        {
            "endpoint": string(
                "The push service URL: printable ASCII (an internationalized host in its "
                "xn-- form), https (http only with PUSH_ALLOW_HTTP_ENDPOINTS), on a host "
                "PUSH_ENDPOINT_HOSTS allows (an IP address only in canonical form and when "
                "named there exactly), without user name or password.",
                max_length=validation.MAX_ENDPOINT_LENGTH,
            ),
            "expirationTime": nullable(
                {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMaximum": MAX_EPOCH_MS,
                    "description": "Milliseconds since the epoch.",
                }
            ),
            "keys": keys,
            "topics": topics_schema(max_topics),
        },
        required=("endpoint", "keys"),
        description="`PushSubscription.toJSON()` of the browser, plus optional topics.",
    )
    create["examples"] = [
        {
            "endpoint": "https://fcm.googleapis.com/fcm/send/dGVzdC1zdWJzY3JpcHRpb24",
            "expirationTime": None,
            "keys": {
                "p256dh": "BM4PVF27c42QVs2f4QRsGCdhrOkkTro9WjE1Zyr2suYFqXsXqeeUB0rrneVtY2g8_XuGKQ"
                "XuobZ8WPZglfCKyZs",
                "auth": "bAZkV59fMoFBf4LgLtCkAA",
            },
            "topics": ["offers"],
        }
    ]
    subscription = all_required(
        obj(
            {
                "id": row_id("sub"),
                "endpoint": string(min_length=None),
                "userId": nullable(
                    string("The owner; null for an anonymous browser.", min_length=None)
                ),
                "topics": array(string(min_length=None)),
                "userAgent": nullable(string(min_length=None, max_length=512)),
                "expirationTime": nullable(integer("Milliseconds since the epoch.")),
                "status": string(enum=["active", "dead"], min_length=None),
                "deadReason": nullable(string(min_length=None)),
                "deadAt": nullable(timestamp()),
                "createdAt": timestamp(),
                "lastSeenAt": timestamp(),
            },
            description="A browser's Web Push subscription. Its keys are never returned.",
        )
    )
    return {"SubscriptionCreate": create, "PushKeys": keys, "Subscription": subscription}


def installation_schemas(max_topics: int) -> dict[str, Schema]:
    settable: dict[str, Schema] = {
        "deviceToken": string(
            "The APNs device token as hex (`ios`) or the FCM registration token (`android`).",
            pattern=FCM_TOKEN_PATTERN,
        ),
        "userId": nullable(
            string(
                "Whose device this is: the caller when absent or null; "
                "only an admin may name another user.",
                max_length=MAX_TEXT,
            )
        ),
        "subscriptions": topics_schema(max_topics),
        "badge": nullable(integer(minimum=0, maximum=2**31 - 1)),
        "timeZone": nullable(string("An IANA time zone such as `Europe/Paris`.", max_length=64)),
        "appVersion": nullable(string(max_length=64)),
    }
    create = obj(
        {
            "appId": string(max_length=MAX_TEXT),
            "deviceType": string(enum=list(validation.DEVICE_TYPES), min_length=None),
            **settable,
        },
        required=("appId", "deviceType", "deviceToken"),
        description="A device to register; a known (appId, deviceToken) is updated and re-bound.",
    )
    # An iOS token is hex; an Android one is the (wider) FCM alphabet.
    create["if"] = {"properties": {"deviceType": {"const": "ios"}}, "required": ["deviceType"]}
    create["then"] = {"properties": {"deviceToken": {"pattern": APNS_TOKEN_PATTERN}}}
    create["examples"] = [
        {
            "appId": "com.example.shop",
            "deviceType": "android",
            "deviceToken": "fcm-token_" + "a1B2c3D4e5" * 6,
            "subscriptions": ["offers"],
            "timeZone": "Europe/Paris",
            "appVersion": "2.4.1",
        }
    ]
    update = obj(settable, description="Fields to change; the device type and app stay.")
    installation = all_required(
        obj(
            {
                "id": row_id("ins"),
                "appId": string(min_length=None),
                "appVersion": nullable(string(min_length=None)),
                "badge": nullable(integer()),
                "deviceToken": string(min_length=None),
                "deviceType": string(enum=list(validation.DEVICE_TYPES), min_length=None),
                "status": string(enum=["active", "dead"], min_length=None),
                "deadReason": nullable(string(min_length=None)),
                "deadAt": nullable(timestamp()),
                "subscriptions": array(string(min_length=None)),
                "timeZone": nullable(string(min_length=None)),
                "userId": nullable(string(min_length=None)),
                "created": timestamp(),
                "modified": timestamp(),
            },
            description="A mobile app install that receives FCM (android) or APNs (ios) pushes.",
        )
    )
    return {
        "InstallationCreate": create,
        "InstallationUpdate": update,
        "Installation": installation,
    }


def inbox_schemas() -> dict[str, Schema]:
    progress = obj(
        {"total": {"type": "number", "minimum": 0}, "processed": {"type": "number", "minimum": 0}},
        required=("total", "processed"),
        description="How far a long task is, for a progress item.",
    )
    upsert = obj(
        {
            "id": nullable(
                string(
                    "An item id of your choosing, to update the item in place; "
                    "a new item gets a generated id.",
                    pattern=ITEM_ID_PATTERN,
                )
            ),
            "userId": nullable(
                string(
                    "Whose inbox: the caller when absent or null; only an "
                    "admin may name another user.",
                    max_length=MAX_TEXT,
                )
            ),
            "type": nullable(string("Default `info`.", pattern=TYPE_PATTERN)),
            "title": nullable(string("Required for a new item.", max_length=MAX_TEXT)),
            "body": nullable(string(min_length=0, max_length=4000)),
            "url": nullable(
                string(
                    "A same-site path such as `/orders/42` (not `//...`, no backslash), "
                    "or an http(s) URL with a host; never `javascript:` and the like.",
                    max_length=2048,
                )
            ),
            "data": nullable(json_data()),
            "isNew": nullable({"type": "boolean"}),
            "progress": nullable(ref("Progress")),
        },
        description="Creates an item, or with the `id` of an existing item updates it; "
        "fields absent or null are left as they are.",
    )
    upsert["examples"] = [
        {
            "id": "export-7",
            "type": "export",
            "title": "Export",
            "body": "40% done",
            "progress": {"total": 100, "processed": 40},
        }
    ]
    item = all_required(
        obj(
            {
                "id": string(pattern=ITEM_ID_PATTERN, min_length=None),
                "userId": string(min_length=None),
                "type": string(pattern=TYPE_PATTERN, min_length=None),
                "title": string(min_length=None),
                "body": nullable(string(min_length=None)),
                "url": nullable(string(min_length=None)),
                "data": nullable({"type": "object"}),
                "isNew": {"type": "boolean"},
                "progress": nullable(ref("Progress")),
                "createdAt": timestamp(),
                "updatedAt": timestamp(),
            },
            description="An entry of a user's notification inbox.",
        )
    )
    page = all_required(
        obj(
            {
                "totalCount": integer("Items matching the filters, on all pages.", minimum=0),
                "newCount": integer("The user's unread items, whatever the filters.", minimum=0),
                "items": array(ref("InboxItem")),
            },
            description="One page of the inbox, newest first.",
        )
    )
    updated = all_required(obj({"updated": integer("How many items were unread.", minimum=0)}))
    return {
        "Progress": progress,
        "InboxItemUpsert": upsert,
        "InboxItem": item,
        "InboxPage": page,
        "UpdatedCount": updated,
    }


def message_schemas() -> dict[str, Schema]:
    link = string(
        "A same-site path such as `/orders/42`, or an http(s) URL with a host.", min_length=0
    )
    audience = {
        "oneOf": [
            obj({"users": array(string(min_length=0))}, required=("users",)),
            obj({"topic": string(min_length=0)}, required=("topic",)),
            obj(
                {
                    "query": {
                        "type": "object",
                        "description": "LoopBack's notifyByQuery: `eq`, `neq`, `inq` and "
                        "`nin` over `userId`, `deviceType`, `appId` and `appVersion`.",
                    }
                },
                required=("query",),
            ),
            obj({"everyone": {"const": True}}, required=("everyone",)),
        ],
        "description": "Exactly one audience: user ids, a topic, a query, or everyone.",
    }
    notification = obj(
        {
            "title": string(min_length=0),
            "body": nullable(string(min_length=0)),
            "url": nullable(link),
            "icon": nullable(link),
            "image": nullable(link),
            "badge": nullable(
                {
                    "type": ["integer", "string"],
                    "description": "A count (iOS, Android) or an image link (browsers).",
                }
            ),
            "sound": nullable(string(min_length=0)),
            "tag": nullable(string(min_length=0)),
            "data": nullable(json_data()),
            "ttl": nullable(
                integer("Seconds the push services keep it; PUSH_DEFAULT_TTL when absent.")
            ),
            "urgency": nullable(string(enum=list(URGENCIES))),
            "collapseKey": nullable(string(min_length=0)),
            "sendAt": nullable(
                timestamp(
                    "When to send (with an offset, such as `Z`); now when absent or past. "
                    f"At most {sending.MAX_SCHEDULE_DAYS} days ahead."
                )
            ),
            "idempotencyKey": nullable(
                string(
                    "A repeat with the same key answers the first message and queues nothing.",
                    min_length=0,
                )
            ),
            "inbox": {"type": "boolean", "description": "Also add an inbox item per user."},
            "notifyType": nullable(string("The inbox item's type.", min_length=0)),
        },
        required=("title",),
        description="What the notification shows, and when it goes. A notification a push "
        "service would refuse as too large answers 400 `payload_too_large`.",
    )
    create = obj(
        {"audience": ref("MessageAudience"), "notification": ref("MessageNotification")},
        required=("audience", "notification"),
    )
    create["examples"] = [
        {
            "audience": {"users": ["alice"]},
            "notification": {"title": "Order #42", "body": "Out for delivery", "url": "/o/42"},
        }
    ]
    status = string(
        "`scheduled` until `sendAt`; then `queued` while every delivery is queued, "
        "`sending` while some are done and some queued, and `done` once none is queued.",
        enum=["scheduled", "queued", "sending", "done"],
    )
    queued = all_required(
        obj(
            {
                "id": row_id("msg"),
                "status": status,
                "recipientCount": integer("Subscriptions and installations reached.", minimum=0),
            }
        )
    )
    count = integer(minimum=0)
    counts = all_required(
        obj(
            {
                "queued": count,
                "sent": count,
                "failed": count,
                "gone": count,
                "expired": count,
                "clicked": integer("Clicks reported by service workers.", minimum=0),
            },
            description="Deliveries per status, and clicks.",
        )
    )
    fields: dict[str, Schema] = {
        "id": row_id("msg"),
        "status": status,
        "recipientCount": integer(minimum=0),
        "createdAt": timestamp(),
        "sendAt": nullable(timestamp()),
        "notification": obj(
            {"title": string(min_length=None)},
            required=("title",),
            closed=False,
            description="The notification as sent (camelCase keys).",
        ),
        "counts": ref("MessageCounts"),
    }
    message = all_required(obj(fields))
    problem = all_required(
        obj(
            {
                "status": string(
                    "`queued`: waiting for a retry, after the attempt that said `reason`.",
                    enum=["queued", "failed", "gone", "expired"],
                ),
                "reason": string("What the push service or flask-push said.", min_length=1),
                "count": integer("Deliveries with this status and reason.", minimum=1),
                "lastAt": timestamp(),
            }
        )
    )
    problems = array(ref("MessageProblem"))
    problems["description"] = (
        "Why deliveries failed, are gone or expired, or wait for a retry: one entry per "
        "status and reason, most recent first, at most 10."
    )
    detail = all_required(obj({**fields, "problems": problems}))
    click = obj(
        {"clickToken": string("The `clickToken` of the Web Push payload.", min_length=0)},
        description="Without a `clickToken` the answer is 403.",
    )
    return {
        "MessageAudience": audience,
        "MessageNotification": notification,
        "MessageCreate": create,
        "MessageQueued": queued,
        "MessageCounts": counts,
        "Message": message,
        "MessageProblem": problem,
        "MessageDetail": detail,
        "MessageList": all_required(
            obj({"totalCount": integer(minimum=0), "items": array(ref("Message"))})
        ),
        "MessageClick": click,
    }


def optional_setting(description: str) -> Schema:
    """A setting with a default: null or an empty string also mean "the default"."""
    return nullable(string(description, min_length=0))


def provider_settings() -> dict[str, tuple[Schema, Schema]]:
    """Per kind: (the settings one writes, the non-secret settings one reads back)."""
    webpush = {
        "privateKey": string(
            "Secret. The VAPID P-256 private key: PEM, or raw or DER "
            "base64url (`flask push vapid-keys`)."
        ),
        "publicKey": optional_setting("Derived from the private key when absent."),
        "subject": string(
            "A contact URI: `mailto:you@example.com` or `https://example.com`.",
            pattern=SUBJECT_PATTERN,
        ),
    }
    fcm = {
        "credentials": {
            "type": ["object", "string"],
            "description": "Secret. The service-account key (JSON object, or its "
            "text) from the Firebase console.",
        },
        "projectId": optional_setting("Default: the credentials' project_id."),
        "baseUrl": optional_setting("An http(s) origin; default https://fcm.googleapis.com."),
    }
    apns = {
        "key": string("Secret. The .p8 auth key from Apple, as PEM text."),
        "keyId": string(pattern=APPLE_ID_PATTERN),
        "teamId": string(pattern=APPLE_ID_PATTERN),
        "topic": string("The app's bundle id.", pattern=BUNDLE_ID_PATTERN),
        "sandbox": {"type": "boolean", "default": False},
        "baseUrl": optional_setting("An https origin; default Apple's."),
    }
    public = {
        "webpush": obj(
            {"publicKey": string(min_length=None), "subject": string(min_length=None)},
            required=("publicKey", "subject"),
        ),
        "fcm": obj(
            {"projectId": string(min_length=None), "baseUrl": string(min_length=None)},
            required=("projectId", "baseUrl"),
        ),
        "apns": obj(
            {
                "keyId": string(min_length=None),
                "teamId": string(min_length=None),
                "topic": string(min_length=None),
                "sandbox": {"type": "boolean"},
                "baseUrl": string(min_length=None),
            },
            required=("keyId", "teamId", "topic", "sandbox"),
        ),
    }
    required = {
        "webpush": ("privateKey", "subject"),
        "fcm": ("credentials",),
        "apns": ("key", "keyId", "teamId", "topic"),
    }
    written = {"webpush": webpush, "fcm": fcm, "apns": apns}
    return {
        kind: (obj(props, required=required[kind]), public[kind]) for kind, props in written.items()
    }


def provider_schemas() -> dict[str, Schema]:
    schemas: dict[str, Schema] = {}
    creates, reads, partials = [], [], []
    for kind, (written, public) in provider_settings().items():
        title = {"webpush": "WebPush", "fcm": "Fcm", "apns": "Apns"}[kind]
        schemas[f"{title}Settings"] = written
        partials.append({key: value for key, value in written.items() if key != "required"})
        schemas[f"{title}ProviderCreate"] = obj(
            {
                "appId": string(max_length=MAX_TEXT),
                "kind": {"const": kind},
                "settings": ref(f"{title}Settings"),
            },
            required=("appId", "kind", "settings"),
        )
        schemas[f"{title}Provider"] = all_required(
            obj(
                {
                    "id": row_id("prv"),
                    "appId": string(min_length=None),
                    "kind": {"const": kind},
                    "settings": public,
                    "secretsSet": array(
                        string(enum=sorted(credentials.KINDS[kind].secret_names), min_length=None),
                        unique=True,
                    ),
                    "createdAt": timestamp(),
                    "modifiedAt": timestamp(),
                }
            )
        )
        creates.append(ref(f"{title}ProviderCreate"))
        reads.append(ref(f"{title}Provider"))
    schemas["ProviderCreate"] = {
        "oneOf": creates,
        "description": "Credentials of one kind for one app id; an app id has at most one "
        "provider of each kind.",
    }
    schemas["ProviderUpdate"] = obj(
        {
            "settings": {
                "anyOf": partials,
                "description": "Settings to change, of the provider's kind; secrets "
                "left out are kept, derived settings recomputed.",
            }
        },
    )
    schemas["Provider"] = {
        "oneOf": reads,
        "description": "Push credentials; secrets are write-only.",
    }
    schemas["ProviderList"] = all_required(
        obj({"totalCount": integer(minimum=0), "items": array(ref("Provider"))})
    )
    return schemas


def schemas(max_topics: int = validation.MAX_TOPICS) -> dict[str, Schema]:
    return {
        "Error": error_schema(),
        "VapidPublicKey": all_required(
            obj(
                {
                    "publicKey": string(
                        "The 65-byte uncompressed P-256 point, base64url without padding, for "
                        "`pushManager.subscribe({applicationServerKey})`.",
                        min_length=None,
                        pattern="^[A-Za-z0-9_-]{87}$",
                    )
                }
            )
        ),
        **subscription_schemas(max_topics),
        **installation_schemas(max_topics),
        **inbox_schemas(),
        **message_schemas(),
        **provider_schemas(),
        "OpenApiDocument": obj(
            {"openapi": string(min_length=None)},
            required=("openapi", "info", "paths"),
            closed=False,
        ),
    }


# -- responses and parameters -----------------------------------------------------

ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "BadRequest",
        "The body or a parameter is refused: malformed JSON, an unknown "
        "field or an invalid value (`field` names it).",
    ),
    401: ("AuthenticationRequired", "No user is signed in."),
    403: ("Forbidden", "The caller may not do this (not an administrator)."),
    404: ("NotFound", "No such row, or it belongs to someone else."),
    409: ("Conflict", "The request conflicts with an existing row or a concurrent change."),
    410: (
        "SubscriptionGone",
        "The push service said this endpoint is gone (`subscription_gone`): subscribe "
        "again in the browser to get a new one.",
    ),
    413: ("PayloadTooLarge", "The body is over PUSH_MAX_REQUEST_BYTES."),
    415: ("UnsupportedMediaType", "The request lacks `Content-Type: application/json`."),
    429: (
        "RateLimited",
        "Too many requests from this client (`rate_limited`); `Retry-After` says when to "
        "try again.",
    ),
    503: (
        "WebPushNotConfigured",
        "Web Push is not set up on this server (`webpush_not_configured`).",
    ),
}


def json_content(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def response(description: str, schema: Schema | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = json_content(schema)
    return answer


def error_response(description: str) -> dict[str, Any]:
    return response(description, ref("Error"))


def error_component(status: int, description: str) -> dict[str, Any]:
    answer = error_response(description)
    if status == 429:
        answer["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return answer


def error_refs(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"$ref": f"#/components/responses/{ERRORS[status][0]}"} for status in statuses
    }


def path_id(description: str, pattern: str | None = None) -> dict[str, Any]:
    schema = string(pattern=pattern)
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def query(name: str, schema: Schema, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
        **extra,
    }


def links(operations: dict[str, str]) -> dict[str, Any]:
    """Links from a response carrying a row's ``id`` to operations taking it."""
    return {
        name: {"operationId": op, "parameters": {"id": "$response.body#/id"}}
        for name, op in operations.items()
    }


def operation(
    operation_id: str,
    summary: str,
    *,
    tag: str,
    responses: dict[str, Any],
    errors: tuple[int, ...] = (),
    who: str = "",
    body: Schema | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An operation; one with a ``body`` also answers 400, 413 and 415."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if who:
        op["description"] = who
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": json_content(body)}
        errors = (400, 413, 415, *errors)
    op["responses"] = {**responses, **error_refs(*sorted(set(errors)))}
    return op


# -- paths ------------------------------------------------------------------------

USER = "Needs a signed-in user (401 otherwise)."
OWNER = "Needs a signed-in user; only the owner, or an administrator, sees the row."
ADMIN = "Administrators only (403 otherwise)."


def meta_paths() -> dict[str, dict[str, Any]]:
    return {
        "/vapid-public-key": {
            "get": operation(
                "getVapidPublicKey",
                "The VAPID public key browsers subscribe with",
                tag="meta",
                who="Anyone.",
                responses={"200": response("The key.", ref("VapidPublicKey"))},
                errors=(503,),
            )
        },
        "/openapi.json": {
            "get": operation(
                "getOpenApiDocument",
                "This document",
                tag="meta",
                who="Anyone.",
                responses={"200": response("An OpenAPI 3.1 document.", ref("OpenApiDocument"))},
            )
        },
        "/static/{filename}": {
            "get": operation(
                "getBrowserClient",
                "The browser client: a plain script, an ES module that loads it, and the "
                "bell's stylesheet",
                tag="meta",
                who="Anyone.",
                parameters=[
                    {
                        "name": "filename",
                        "in": "path",
                        "required": True,
                        "description": "`flask-push.js` (sets `window.FlaskPush`), "
                        "`flask-push.mjs` (exports the same functions) or `flask-push.css` "
                        "(the bell's look, which the bell links by itself).",
                        "schema": {
                            "type": "string",
                            "enum": ["flask-push.js", "flask-push.mjs", "flask-push.css"],
                        },
                    }
                ],
                responses={
                    "200": {
                        "description": "The script, or the stylesheet.",
                        "content": {
                            "application/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    }
                },
                errors=(404,),
            )
        },
    }


def subscription_paths() -> dict[str, dict[str, Any]]:
    created = links({"DeleteSubscription": "deleteSubscription"})
    return {
        "/subscriptions": {
            "post": operation(
                "createSubscription",
                "Register a browser's push subscription",
                tag="subscriptions",
                who="A signed-in user (the subscription is theirs) or anyone (an anonymous "
                "subscription, whose id is its only credential). At most "
                "PUSH_SUBSCRIBE_RATE_LIMIT requests per client address (429 above). "
                "An endpoint already known is re-bound to the caller (200); to another "
                "owner it starts over, without the previous owner's topics. An endpoint "
                "its push service reported gone is refused (410).",
                body=ref("SubscriptionCreate"),
                responses={
                    "201": response("Created.", ref("Subscription")) | {"links": created},
                    "200": response(
                        "The endpoint was known: updated and bound to the caller.",
                        ref("Subscription"),
                    )
                    | {"links": created},
                },
                errors=(409, 410, 429, 503),
            )
        },
        "/subscriptions/{id}": {
            "delete": operation(
                "deleteSubscription",
                "Remove a subscription",
                tag="subscriptions",
                who="Its owner, an administrator, or (for an anonymous subscription) "
                "anyone holding its id.",
                parameters=[path_id("The subscription's id.")],
                responses={"204": response("Deleted.")},
                errors=(404,),
            )
        },
    }


def installation_paths() -> dict[str, dict[str, Any]]:
    item = links(
        {
            "GetInstallation": "getInstallation",
            "UpdateInstallation": "updateInstallation",
            "DeleteInstallation": "deleteInstallation",
        }
    )
    one = [path_id("The installation's id.")]
    return {
        "/installations": {
            "post": operation(
                "registerInstallation",
                "Register a mobile app install",
                tag="installations",
                who=USER,
                body=ref("InstallationCreate"),
                responses={
                    "201": response("Created.", ref("Installation")) | {"links": item},
                    "200": response(
                        "The (appId, deviceToken) was known: updated and re-bound.",
                        ref("Installation"),
                    )
                    | {"links": item},
                },
                errors=(401, 403, 409),
            )
        },
        "/installations/{id}": {
            "get": operation(
                "getInstallation",
                "One installation",
                tag="installations",
                who=OWNER,
                parameters=one,
                responses={"200": response("The installation.", ref("Installation"))},
                errors=(401, 404),
            ),
            "patch": operation(
                "updateInstallation",
                "Change an installation",
                tag="installations",
                who=OWNER,
                parameters=one,
                body=ref("InstallationUpdate"),
                responses={"200": response("The changed installation.", ref("Installation"))},
                errors=(401, 403, 404, 409),
            ),
            "delete": operation(
                "deleteInstallation",
                "Remove an installation",
                tag="installations",
                who=OWNER,
                parameters=one,
                responses={"204": response("Deleted.")},
                errors=(401, 404),
            ),
        },
    }


def notification_paths() -> dict[str, dict[str, Any]]:
    item = links(
        {"GetNotification": "getNotification", "MarkNotificationRead": "markNotificationRead"}
    )
    one = [path_id("The item's id.", ITEM_ID_PATTERN)]
    empty = {
        "type": "object",
        "description": "Any JSON object (its fields are ignored), or no body at all; the "
        "request still needs `Content-Type: application/json`.",
    }
    listing = [
        query(
            "onlyNew",
            {"type": "boolean", "default": False},
            "Only unread items (`1` and `0` are accepted too).",
        ),
        query(
            "type",
            array(string(pattern=TYPE_LIST_PATTERN, min_length=0)),
            "Only items of these types; repeat the parameter or separate with commas.",
            style="form",
            explode=True,
        ),
        query("skip", integer(minimum=0, maximum=10**9) | {"default": 0}, "Items to skip."),
        query(
            "take",
            integer(minimum=1, maximum=inbox.MAX_TAKE) | {"default": inbox.DEFAULT_TAKE},
            "Page size.",
        ),
    ]
    return {
        "/notifications": {
            "get": operation(
                "listNotifications",
                "The caller's inbox, newest first",
                tag="notifications",
                who=USER,
                parameters=listing,
                responses={"200": response("One page.", ref("InboxPage"))},
                errors=(400, 401),
            ),
            "post": operation(
                "upsertNotification",
                "Create or update an inbox item",
                tag="notifications",
                who=USER + " Only an administrator may write to another user's inbox.",
                body=ref("InboxItemUpsert"),
                responses={
                    "201": response("Created.", ref("InboxItem")) | {"links": item},
                    "200": response("Updated.", ref("InboxItem")) | {"links": item},
                },
                errors=(401, 403, 409),
            ),
        },
        "/notifications/mark-all-read": {
            "post": operation(
                "markAllNotificationsRead",
                "Mark all of the caller's items read",
                tag="notifications",
                who=USER,
                body=empty,
                responses={"200": response("How many were unread.", ref("UpdatedCount"))},
                errors=(401,),
            )
        },
        "/notifications/{id}": {
            "get": operation(
                "getNotification",
                "One of the caller's items",
                tag="notifications",
                who=USER,
                parameters=one,
                responses={"200": response("The item.", ref("InboxItem"))},
                errors=(401, 404),
            )
        },
        "/notifications/{id}/read": {
            "post": operation(
                "markNotificationRead",
                "Mark one of the caller's items read",
                tag="notifications",
                who=USER,
                parameters=one,
                body=empty,
                responses={"200": response("1 if it was unread, else 0.", ref("UpdatedCount"))},
                errors=(401, 404),
            )
        },
    }


def message_paths() -> dict[str, dict[str, Any]]:
    item = links({"GetMessage": "getMessage"})
    one = [path_id("The message's id.")]
    listing = [
        query("skip", integer(minimum=0, maximum=10**9) | {"default": 0}, "Messages to skip."),
        query(
            "take",
            integer(minimum=1, maximum=messages.MAX_TAKE) | {"default": messages.DEFAULT_TAKE},
            "Page size.",
        ),
    ]
    return {
        "/messages": {
            "post": operation(
                "sendMessage",
                "Send a notification to an audience",
                tag="messages",
                who=ADMIN,
                body=ref("MessageCreate"),
                responses={
                    "202": response(
                        "Queued (or, with a known `idempotencyKey`, the first message).",
                        ref("MessageQueued"),
                    )
                    | {"links": item}
                },
                errors=(403, 409),
            ),
            "get": operation(
                "listMessages",
                "Sent messages, newest first",
                tag="messages",
                who=ADMIN,
                parameters=listing,
                responses={"200": response("One page.", ref("MessageList"))},
                errors=(400, 403),
            ),
        },
        "/messages/{id}": {
            "get": operation(
                "getMessage",
                "One message, with its delivery counts",
                tag="messages",
                who=ADMIN,
                parameters=one,
                responses={"200": response("The message.", ref("MessageDetail"))},
                errors=(403, 404),
            )
        },
        "/messages/{id}/clicks": {
            "post": operation(
                "recordMessageClick",
                "Count a click on a message's notification",
                tag="messages",
                who="Anyone holding a click token of this message (the service worker). "
                "A missing, forged or other message's token answers 403, as does every "
                "token when the app has no SECRET_KEY. Every valid click is counted.",
                parameters=one,
                body=ref("MessageClick"),
                responses={"204": response("Counted.")},
                errors=(403, 404),
            )
        },
    }


def provider_paths() -> dict[str, dict[str, Any]]:
    item = links(
        {
            "GetProvider": "getProvider",
            "UpdateProvider": "updateProvider",
            "DeleteProvider": "deleteProvider",
        }
    )
    one = [path_id("The provider's id.")]
    return {
        "/providers": {
            "get": operation(
                "listProviders",
                "Every provider, by appId and kind",
                tag="providers",
                who=ADMIN,
                responses={"200": response("All providers.", ref("ProviderList"))},
                errors=(403,),
            ),
            "post": operation(
                "createProvider",
                "Add push credentials for an app id",
                tag="providers",
                who=ADMIN,
                body=ref("ProviderCreate"),
                responses={"201": response("Created.", ref("Provider")) | {"links": item}},
                errors=(403, 409),
            ),
        },
        "/providers/{id}": {
            "get": operation(
                "getProvider",
                "One provider",
                tag="providers",
                who=ADMIN,
                parameters=one,
                responses={"200": response("The provider.", ref("Provider"))},
                errors=(403, 404),
            ),
            "patch": operation(
                "updateProvider",
                "Change a provider's settings",
                tag="providers",
                who=ADMIN,
                parameters=one,
                body=ref("ProviderUpdate"),
                responses={"200": response("The changed provider.", ref("Provider"))},
                errors=(403, 404),
            ),
            "delete": operation(
                "deleteProvider",
                "Remove a provider",
                tag="providers",
                who=ADMIN,
                parameters=one,
                responses={"204": response("Deleted.")},
                errors=(403, 404),
            ),
        },
    }


def paths(prefix: str) -> dict[str, dict[str, Any]]:
    base = prefix.rstrip("/")
    routes = {
        **meta_paths(),
        **subscription_paths(),
        **installation_paths(),
        **notification_paths(),
        **message_paths(),
        **provider_paths(),
    }
    return {base + path: item for path, item in routes.items()}


def document(
    prefix: str, *, server: str, max_topics: int = validation.MAX_TOPICS
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API mounted at ``prefix``, served from ``server``,
    for an app whose ``PUSH_MAX_TOPICS`` is ``max_topics``."""
    from .. import __version__  # here, so that importing this module never cycles

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flask-push",
            "version": __version__,
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": server}],
        "tags": [
            {"name": name}
            for name in (
                "meta",
                "subscriptions",
                "installations",
                "notifications",
                "messages",
                "providers",
            )
        ],
        "paths": paths(prefix),
        "components": {
            "schemas": schemas(max_topics),
            "responses": {
                name: error_component(status, description)
                for status, (name, description) in ERRORS.items()
            },
        },
    }
