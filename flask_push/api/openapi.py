"""OpenAPI 3.1 document of the JSON API (CONTRACT.md section 3).

Written from the route table (:mod:`flask_push.api.routes`, each resource module's
``ROUTES``) and from the pydantic models the routes parse and answer with: the
schemas are the models' own, so the limits, enums and formats the server checks are
the ones the document shows. Limits that come from configuration
(``PUSH_MAX_TOPICS``, ``PUSH_ENDPOINT_HOSTS``...) are the app's.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

from .._version import __version__
from ..schemas.base import Context, NoFields, document_context
from ..schemas.errors import Error
from .routes import ANYONE, Answer, Route, table

Schema = dict[str, Any]
JSON = "application/json"
_REFS = "#/components/schemas/{model}"

DESCRIPTION = """\
Push subscriptions, mobile installations, the per-user notification inbox and
push provider credentials.

**Identity.** There is no API key or token: every request is identified by the
host application's own session (usually its session cookie), through the
callbacks the host registers with `push.identity_loader` (the signed-in user's id)
and `push.admin_loader` (may this request use the admin endpoints?). Endpoints
that need a user answer 401 without one; admin endpoints answer 403 to anyone
else. Rows of another user answer 404, as if they did not exist.

**Requests.** Every POST and PATCH with a body must be sent with
`Content-Type: application/json` (415 otherwise), and so must a POST without one
that a browser says came from another site (`Sec-Fetch-Site`, `Origin`). A body
is UTF-8, uncompressed (415 with a `Content-Encoding`) and limited to
`PUSH_MAX_REQUEST_BYTES` (413 above). A body is a JSON object,
nested at most 64 levels, with finite numbers; request objects refuse unknown
fields (400 `unknown_field`), and text, at any depth of a JSON field such as
`data` (object keys included), may not contain NUL characters or unpaired
surrogates (`"\\ud800"`).

**Errors** are always `{"error": {"code", "message", "field"?}}`.
"""

TAGS = (
    "meta",
    "subscriptions",
    "installations",
    "notifications",
    "preferences",
    "messages",
    "providers",
    "users",
    "operations",
)

#: status -> (component name, what it means)
ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "BadRequest",
        "The body or a parameter is refused: malformed JSON, an unknown "
        "field or an invalid value (`field` names it).",
    ),
    401: ("AuthenticationRequired", "No user is signed in."),
    403: ("Forbidden", "The caller may not do this (not an administrator)."),
    404: ("NotFound", "No such row, or it belongs to someone else."),
    409: (
        "Conflict",
        "The request conflicts with an existing row, a concurrent change or the state of "
        "what it names (a retry of a cancelled message: `message_cancelled`).",
    ),
    410: (
        "SubscriptionGone",
        "The push service said this endpoint is gone (`subscription_gone`): subscribe "
        "again in the browser to get a new one.",
    ),
    413: ("PayloadTooLarge", "The body is over PUSH_MAX_REQUEST_BYTES."),
    415: (
        "UnsupportedMediaType",
        "The request lacks `Content-Type: application/json`, or has a `Content-Encoding`.",
    ),
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
#: what every operation with a body may also answer
_BODY_ERRORS = (400, 413, 415)


def document(
    prefix: str,
    *,
    server: str,
    limits: Context | None = None,
    service_worker: str | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API mounted at ``prefix``, served from ``server``
    (the URL its paths are relative to), for an app with the ``limits`` of its settings
    (:meth:`Context.of`; the defaults when None). ``service_worker``: the URL of the
    generated service worker (``PUSH_SERVICE_WORKER_URL``), which the app serves
    outside the prefix; documented when given."""
    # a copy: whoever gets the document may change it, the next one gets it whole
    return copy.deepcopy(_document(prefix, server, limits or Context(), service_worker))


#: ``GET <PUSH_SERVICE_WORKER_URL>``: served at the app's root, outside the prefix
_SERVICE_WORKER: dict[str, Any] = {
    "operationId": "getServiceWorker",
    "summary": "The generated service worker",
    "tags": ["meta"],
    "description": ANYONE,
    "responses": {
        "200": {
            "description": "The service worker script (`PUSH_SERVICE_WORKER_URL`, served at "
            "the app's root so that its scope can be the whole site).",
            "content": {"application/javascript": {"schema": {"type": "string"}}},
        }
    },
}


@lru_cache(maxsize=32)
def _document(
    prefix: str, server: str, limits: Context, service_worker: str | None = None
) -> dict[str, Any]:
    schemas, refs = _components(limits)
    base = prefix.rstrip("/")
    paths: dict[str, dict[str, Any]] = {}
    for route in table():
        paths.setdefault(base + _openapi_path(route.rule), {})[route.method.lower()] = _operation(
            route, refs, limits
        )
    if service_worker is not None:
        paths[service_worker] = {"get": _SERVICE_WORKER}  # document() hands out a copy
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flask-push",
            "version": __version__,
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": server}],
        "tags": [{"name": name} for name in TAGS],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                name: _error_component(status, description)
                for status, (name, description) in ERRORS.items()
            },
        },
    }


# -- schemas ---------------------------------------------------------------------------


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema, as an API document reads best: no generated titles, no
    defaults in answers (every field of an answer is always there), and a map's keys
    as ``propertyNames``."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if self.mode == "serialization":
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        # ``{"type": ["string", "null"], ...}`` rather than an ``anyOf`` of two schemas
        inner = self.generate_inner(schema["schema"])
        kind = inner.get("type")
        if kind is None or {"$ref", "anyOf", "oneOf", "allOf"} & set(inner):
            return super().nullable_schema(schema)
        merged = {**inner, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}
        if "const" in merged:
            merged["enum"] = [merged.pop("const")]
        if "enum" in merged:
            merged["enum"] = [*merged["enum"], None]
        return merged

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        json_schema = super().dict_schema(schema)
        keys = json_schema.pop("patternProperties", None)
        if keys:
            [(pattern, values)] = keys.items()
            json_schema["propertyNames"] = {"pattern": pattern}
            json_schema["additionalProperties"] = values
        return json_schema


def _models(route: Route) -> Iterator[tuple[Any, JsonSchemaMode]]:
    if _is_model(route.body):
        yield route.body, "validation"
    for answer in route.answers.values():
        if _is_model(answer.model):
            yield answer.model, "serialization"
    yield Error, "serialization"


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _components(limits: Context) -> tuple[dict[str, Schema], dict[tuple[Any, str], Schema]]:
    """Every model's schema by name, and the reference to each (model, mode)."""
    inputs = list(dict.fromkeys(m for route in table() for m in _models(route)))
    generator = _Generator(ref_template=_REFS)
    token = document_context.set(limits)
    try:
        refs, definitions = generator.generate_definitions(
            [(model, mode, model.__pydantic_core_schema__) for model, mode in inputs]
        )
    finally:
        document_context.reset(token)
    schemas = {str(name): _untitled(schema) for name, schema in definitions.items()}
    return _merged(schemas, {key: _untitled(ref) for key, ref in refs.items()})


def _merged(
    schemas: dict[str, Schema], refs: dict[tuple[Any, str], Schema]
) -> tuple[dict[str, Schema], dict[tuple[Any, str], Schema]]:
    """One component for a type whose requests and answers read alike (pydantic names
    them ``X-Input`` and ``X-Output``), and none that nothing refers to."""
    renamed: dict[str, str] = {}
    for name in [n.removesuffix("-Input") for n in schemas if n.endswith("-Input")]:
        pair = (f"{name}-Input", f"{name}-Output")
        if pair[1] in schemas and _renamed(schemas[pair[0]], {pair[0]: name}) == _renamed(
            schemas[pair[1]], {pair[1]: name}
        ):
            renamed.update(dict.fromkeys(pair, name))
    schemas = {renamed.get(n, n): _renamed(schema, renamed) for n, schema in schemas.items()}
    refs = {key: _renamed(ref, renamed) for key, ref in refs.items()}
    used = _referenced(list(refs.values()), schemas)
    return {name: schemas[name] for name in sorted(used)}, refs


def _renamed(schema: Any, names: Mapping[str, str]) -> Any:
    text = json.dumps(schema)
    for old, new in names.items():
        text = text.replace(
            json.dumps(_REFS.format(model=old)), json.dumps(_REFS.format(model=new))
        )
    return json.loads(text)


def _referenced(roots: list[Any], schemas: Mapping[str, Schema]) -> set[str]:
    """The components ``roots`` refer to, directly or through others."""
    seen: set[str] = set()
    pending = list(roots)
    prefix = _REFS.format(model="")
    while pending:
        for found in re.findall(r'"\$ref": "([^"]+)"', json.dumps(pending.pop())):
            name = found.removeprefix(prefix)
            if name not in seen and name in schemas:
                seen.add(name)
                pending.append(schemas[name])
    return seen


#: what holds names or values rather than schemas: a "title" there is not a title
_NOT_SCHEMAS = frozenset({"properties", "$defs", "examples", "enum", "const", "default", "mapping"})


def _untitled(schema: Any) -> Any:
    """``schema`` without the titles pydantic gives models (their names say it)."""
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "description" and isinstance(value, str):
            # a docstring's line breaks are not the document's
            cleaned[key] = re.sub(r"[ \t]*\n[ \t]*", " ", value)
            continue
        if key in ("properties", "$defs"):
            cleaned[key] = {name: _untitled(item) for name, item in value.items()}
        elif key in _NOT_SCHEMAS:
            cleaned[key] = value
        else:
            cleaned[key] = _untitled(value)
    return cleaned


def _query_parameters(model: type[BaseModel], limits: Context) -> list[dict[str, Any]]:
    """A query model's fields as OpenAPI parameters."""
    token = document_context.set(limits)
    try:
        schema = _untitled(model.model_json_schema(schema_generator=_Generator))
    finally:
        document_context.reset(token)
    parameters = []
    for name, field in schema["properties"].items():
        description = field.pop("description", "")
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "description": " ".join(description.split()),
            "schema": field,
        }
        if field.get("type") == "array":
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


# -- operations ------------------------------------------------------------------------


def _openapi_path(rule: str) -> str:
    """A Flask URL rule (``/messages/<id>``) as an OpenAPI path (``/messages/{id}``)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _operation(
    route: Route, refs: Mapping[tuple[Any, str], Schema], limits: Context
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "description": route.who,
    }
    parameters = list(route.parameters)
    if route.id_description is not None:
        schema: Schema = {"type": "string", "minLength": 1}
        if route.id_pattern is not None:
            schema["pattern"] = route.id_pattern
        parameters.append(
            {
                "name": "id",
                "in": "path",
                "required": True,
                "description": route.id_description,
                "schema": schema,
            }
        )
    if route.query is not None:
        parameters.extend(_query_parameters(route.query, limits))
    if parameters:
        operation["parameters"] = parameters
    errors = set(route.errors)
    if route.body is not None:
        operation["requestBody"] = {
            # NoFields: a POST that may have no body at all
            "required": route.body is not NoFields,
            "content": {JSON: {"schema": refs[(route.body, "validation")]}},
        }
        errors.update(_BODY_ERRORS)
    answers = {str(status): _answer(answer, refs) for status, answer in route.answers.items()}
    for status in sorted(errors):
        answers[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    operation["responses"] = answers
    return operation


def _answer(answer: Answer, refs: Mapping[tuple[Any, str], Schema]) -> dict[str, Any]:
    shown: dict[str, Any] = {"description": answer.description}
    if _is_model(answer.model):
        shown["content"] = {JSON: {"schema": refs[(answer.model, "serialization")]}}
    elif answer.model is not None:  # media type -> schema, for what is not JSON
        shown["content"] = {kind: {"schema": schema} for kind, schema in answer.model.items()}
    if answer.links:
        shown["links"] = {
            operation_id[0].upper() + operation_id[1:]: {
                "operationId": operation_id,
                "parameters": {"id": "$response.body#/id"},
            }
            for operation_id in answer.links
        }
    return shown


def _error_component(status: int, description: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": _REFS.format(model="Error")}}},
    }
    if status == 429:
        answer["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return answer
