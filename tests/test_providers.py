"""/providers: admin-only, checked like config, secrets write-only."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from flask_push.credentials import vapid_public_key, vapid_raw_private_key

from conftest import as_user, db, pem, push, service_account

ADMIN = as_user("root", admin=True)


def apns_settings(**extra):
    return {
        "key": pem(ec.generate_private_key(ec.SECP256R1())),
        "keyId": "ABC123DEFG",
        "teamId": "DEF123GHIJ",
        "topic": "com.example.shop",
        **extra,
    }


def test_admin_only(client):
    for headers in ({}, as_user("alice")):
        assert client.get("/push/providers", headers=headers).status_code == 403
        response = client.post(
            "/push/providers",
            headers=headers,
            json={"appId": "shop", "kind": "apns", "settings": apns_settings()},
        )
        assert response.status_code == 403
        assert response.json["error"]["code"] == "forbidden"


def test_create_list_get_patch_delete_without_leaking_secrets(app, client, vapid_private_key):
    sa_info = service_account()
    created = client.post(
        "/push/providers",
        headers=ADMIN,
        json={"appId": "shop-android", "kind": "fcm", "settings": {"credentials": sa_info}},
    )
    assert created.status_code == 201
    fcm = created.json
    assert fcm["settings"] == {"projectId": "shop-123", "baseUrl": "https://fcm.googleapis.com"}
    assert fcm["secretsSet"] == ["credentials"]
    apns = client.post(
        "/push/providers",
        headers=ADMIN,
        json={"appId": "shop-ios", "kind": "apns", "settings": apns_settings(sandbox=True)},
    ).json
    webpush = client.post(
        "/push/providers",
        headers=ADMIN,
        json={
            "appId": "shop-web",
            "kind": "webpush",
            "settings": {"privateKey": vapid_private_key, "subject": "mailto:ops@shop.example"},
        },
    ).json
    assert webpush["settings"]["publicKey"] == app.extensions["push"].settings.vapid_public_key

    listing = client.get("/push/providers", headers=ADMIN)
    text = listing.get_data(as_text=True)
    assert listing.json["totalCount"] == 3
    for secret in (sa_info["private_key"].splitlines()[1], vapid_private_key, "BEGIN PRIVATE KEY"):
        assert secret not in text
    assert (
        client.get(f"/push/providers/{apns['id']}", headers=ADMIN).json["settings"]["sandbox"]
        is True
    )

    patched = client.patch(
        f"/push/providers/{fcm['id']}", headers=ADMIN, json={"settings": {"projectId": "shop-456"}}
    )
    assert patched.status_code == 200
    assert patched.json["settings"]["projectId"] == "shop-456"
    assert patched.json["secretsSet"] == ["credentials"]  # kept though not sent again
    with app.app_context():
        row = db.session.get(push.models.Provider, fcm["id"])
        assert row.secrets["credentials"]["client_email"] == sa_info["client_email"]

    fresh = Vapid()
    fresh.generate_keys()
    rotated = client.patch(
        f"/push/providers/{webpush['id']}",
        headers=ADMIN,
        json={"settings": {"privateKey": vapid_raw_private_key(fresh)}},
    ).json
    assert rotated["settings"]["publicKey"] == vapid_public_key(fresh)  # re-derived

    assert client.delete(f"/push/providers/{apns['id']}", headers=ADMIN).status_code == 204
    assert client.get(f"/push/providers/{apns['id']}", headers=ADMIN).status_code == 404


def test_one_provider_per_kind_and_app(client):
    body = {"appId": "shop-ios", "kind": "apns", "settings": apns_settings()}
    assert client.post("/push/providers", headers=ADMIN, json=body).status_code == 201
    response = client.post("/push/providers", headers=ADMIN, json=body)
    assert response.status_code == 409 and "PATCH" in response.json["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"appId": "a", "kind": "sms", "settings": {}}, "kind", "invalid_value"),
        ({"kind": "apns", "settings": apns_settings()}, "appId", "required"),
        (
            {"appId": "a", "kind": "apns", "settings": apns_settings(keyId="x")},
            "settings.keyId",
            "invalid_setting",
        ),
        (
            {"appId": "a", "kind": "apns", "settings": apns_settings(key=None)},
            "settings.key",
            "missing_setting",
        ),
        (
            {"appId": "a", "kind": "apns", "settings": apns_settings(color="red")},
            "color",
            "unknown_field",
        ),
        (
            {
                "appId": "a",
                "kind": "webpush",
                "settings": {"privateKey": "nope", "subject": "mailto:a@b.c"},
            },
            "settings.privateKey",
            "invalid_setting",
        ),
        (
            {"appId": "a", "kind": "webpush", "settings": {"privateKey": None, "subject": "x"}},
            "settings.privateKey",
            "missing_setting",
        ),
        (
            {"appId": "a", "kind": "fcm", "settings": {"credentials": "/etc/passwd"}},
            "settings.credentials",
            "invalid_setting",
        ),
        ({"appId": "a", "kind": "fcm", "settings": "x"}, "settings", "invalid_type"),
    ],
)
def test_bad_provider_settings(client, body, field, code):
    response = client.post("/push/providers", headers=ADMIN, json=body)
    assert response.status_code == 400, response.json
    assert (response.json["error"]["field"], response.json["error"]["code"]) == (field, code)
    assert client.get("/push/providers", headers=ADMIN).json["totalCount"] == 0


def test_credentials_as_json_text_are_accepted(client):
    response = client.post(
        "/push/providers",
        headers=ADMIN,
        json={
            "appId": "a",
            "kind": "fcm",
            "settings": {"credentials": json.dumps(service_account())},
        },
    )
    assert response.status_code == 201


def test_bad_patch_keeps_the_stored_settings(client):
    created = client.post(
        "/push/providers",
        headers=ADMIN,
        json={"appId": "shop-ios", "kind": "apns", "settings": apns_settings()},
    ).json
    response = client.patch(
        f"/push/providers/{created['id']}", headers=ADMIN, json={"settings": {"teamId": "bad"}}
    )
    assert response.status_code == 400
    stored = client.get(f"/push/providers/{created['id']}", headers=ADMIN).json
    assert stored["settings"]["teamId"] == "DEF123GHIJ"
