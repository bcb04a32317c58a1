"""Operations routes: ``GET /health`` for load balancers, ``GET /metrics`` for Prometheus."""

from __future__ import annotations

import hmac

from flask import Response, current_app, jsonify, request

from .. import health as _health
from ..schemas.errors import Error
from ..schemas.operations import Health
from .http import ApiError, fail
from .routes import ANYONE, Answer, Routes

ROUTES = Routes("operations", who=ANYONE)


@ROUTES(
    "GET",
    "/health",
    "getHealth",
    "Whether this process can serve: database, backplane and outbox",
    answers={
        200: Answer("Everything answers (`status` is `ok`).", Health),
        503: Answer("Something is down (`status` is `down`); the fields say what.", Health),
    },
)
def health() -> Response:
    found = _health.check(current_app.extensions["push"])
    response = jsonify(found.to_json())
    response.status_code = 200 if found.status == "ok" else 503
    # a probe must see the state of now, never a cached answer
    response.headers["Cache-Control"] = "no-store"
    return response


@ROUTES(
    "GET",
    "/metrics",
    "getMetrics",
    "Prometheus metrics, in the text exposition format",
    who="A scraper: with PUSH_METRICS_TOKEN set, `Authorization: Bearer <token>` (401 otherwise).",
    answers={
        200: Answer("The metrics.", {"text/plain": {"type": "string"}}),
        401: Answer("PUSH_METRICS_TOKEN is set and the request's bearer token is not it.", Error),
        404: Answer("PUSH_METRICS is off.", Error),
    },
)
def metrics() -> Response:
    state = current_app.extensions["push"]
    if state.metrics is None:
        fail(404, "not_found", "There is no such endpoint.")
    token = state.settings.metrics_token
    if token is not None:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        # compare_digest: how long a wrong token took must not tell how much of it was right
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise ApiError(
                401,
                "authentication_required",
                "Send the metrics token (PUSH_METRICS_TOKEN) as 'Authorization: Bearer <token>'.",
                headers={"WWW-Authenticate": 'Bearer realm="flask-push metrics"'},
            )
    from ..metrics import CONTENT_TYPE

    return Response(state.metrics.render(), content_type=CONTENT_TYPE)
