"""flask_push.testing.push_fake_fcm.FakeFCM, driven by the real client pyfcm and by plain requests.

What every fake does alike (its lifecycle, waiting, scripting, delay and hold) is
tested once for all three in test_fake_service.py.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.transport.requests import Request
from google.oauth2 import service_account as google_service_account
from pyfcm import FCMNotification
from pyfcm.errors import (
    AuthenticationError,
    FCMNotRegisteredError,
    FCMSenderIdMismatchError,
    FCMServerError,
    InvalidDataError,
)

from flask_push.testing.fcm import (
    FCM_SCOPE,
    FakeFCM,
    ReceivedMessage,
    make_registration_token,
)

from conftest import pem
from conftest import service_account as foreign_service_account

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


@pytest.fixture
def account(push_fake_fcm: FakeFCM) -> dict[str, str]:
    return push_fake_fcm.service_account()


def credentials(info: dict[str, str]) -> Any:
    return google_service_account.Credentials.from_service_account_info(info, scopes=[FCM_SCOPE])


def pyfcm_client(fake: FakeFCM, info: dict[str, str]) -> FCMNotification:
    client = FCMNotification(credentials=credentials(info))
    client.FCM_END_POINT_BASE = fake.endpoint_base
    return client


@pytest.fixture
def client(push_fake_fcm: FakeFCM, account: dict[str, str]) -> FCMNotification:
    return pyfcm_client(push_fake_fcm, account)


@pytest.fixture
def access_token(push_fake_fcm: FakeFCM, account: dict[str, str]) -> str:
    """An access token fetched the way google-auth does it."""
    creds = credentials(account)
    creds.refresh(Request())
    return str(creds.token)


def send(fake: FakeFCM, token: str | None, body: Any, project: str = "flask-push-test") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{fake.endpoint_base}/{project}/messages:send"
    return requests.post(url, json=body, headers=headers, timeout=5)


def assert_invalid_argument(response: Any, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert error["details"][0] == {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"}
    if field is not None:
        assert error["details"][1]["fieldViolations"][0]["field"] == field
    return dict(error)


# -- through pyfcm --------------------------------------------------------------


def test_pyfcm_message_arrives_with_its_fields(
    push_fake_fcm: FakeFCM, client: FCMNotification
) -> None:
    token = make_registration_token()
    android = {
        "ttl": "3600s",
        "priority": "HIGH",
        "collapse_key": "inbox",
        "notification": {"icon": "ic_bell", "color": "#3366ff", "tag": "ntf_1", "sound": "default"},
    }
    answer = client.notify(
        fcm_token=token,
        notification_title="Export ready",
        notification_body="3 files",
        notification_image="https://example.com/a.png",
        data_payload={"id": "ntf_1", "url": "/inbox"},
        android_config=android,
        apns_config={"headers": {"apns-priority": "10"}, "payload": {"aps": {"badge": 1}}},
    )
    [received] = push_fake_fcm.wait(1, timeout=2)
    assert isinstance(received, ReceivedMessage)
    assert answer == {"name": received.name}
    assert received.name.startswith("projects/flask-push-test/messages/")
    assert received.token == token and received.topic is None and received.condition is None
    assert received.notification == {
        "title": "Export ready",
        "body": "3 files",
        "image": "https://example.com/a.png",
    }
    assert received.data == {"id": "ntf_1", "url": "/inbox"}
    assert received.android == android
    assert received.apns == {"headers": {"apns-priority": "10"}, "payload": {"aps": {"badge": 1}}}
    # The bearer token is one /token really issued, to this account, for FCM.
    [issued] = [t for t in push_fake_fcm.issued_tokens if t.access_token == received.access_token]
    assert issued.client_email == received_email(client)
    assert FCM_SCOPE in issued.scopes and issued.expires_at - issued.issued_at == 3600


def received_email(client: FCMNotification) -> str:
    return str(client.credentials.service_account_email)


def test_pyfcm_reuses_its_token_per_thread(push_fake_fcm: FakeFCM, client: FCMNotification) -> None:
    token = make_registration_token()
    before = len(push_fake_fcm.issued_tokens)
    client.notify(fcm_token=token, notification_title="one")
    client.notify(fcm_token=token, notification_title="two")
    assert len(push_fake_fcm.issued_tokens) == before + 1
    # pyfcm keeps a session, and so an access token, per thread.
    worker = threading.Thread(target=client.notify, kwargs={"fcm_token": token})
    worker.start()
    worker.join()
    assert len(push_fake_fcm.issued_tokens) == before + 2
    assert [m.notification for m in push_fake_fcm.wait(3)] == [
        {"title": "one"},
        {"title": "two"},
        {},  # pyfcm sends an empty notification when given neither title nor body
    ]


def test_pyfcm_with_a_service_account_file(
    push_fake_fcm: FakeFCM, account: dict[str, str], tmp_path: Any
):
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(account))
    client = FCMNotification(service_account_file=str(path))
    client.FCM_END_POINT_BASE = push_fake_fcm.endpoint_base
    client.notify(topic_name="news", data_payload={"k": "v"})
    [received] = push_fake_fcm.messages
    assert received.topic == "news" and received.token is None
    assert received.message == {"topic": "news", "data": {"k": "v"}}  # data only: no notification


def test_pyfcm_dry_run_is_checked_but_not_delivered(
    push_fake_fcm: FakeFCM, client: FCMNotification
) -> None:
    answer = client.notify(fcm_token=make_registration_token(), dry_run=True)
    assert answer == {"name": "projects/flask-push-test/messages/fake_message_id"}
    assert push_fake_fcm.messages == [] and push_fake_fcm.send_attempts == 1
    with pytest.raises(InvalidDataError):
        client.notify(fcm_token="short", dry_run=True)


def test_unregistered_token_raises_not_registered(
    push_fake_fcm: FakeFCM, client: FCMNotification
) -> None:
    gone, alive = make_registration_token(), make_registration_token()
    push_fake_fcm.unregister(gone)
    with pytest.raises(FCMNotRegisteredError):
        client.notify(fcm_token=gone, notification_title="Hi")
    client.notify(fcm_token=alive, notification_title="Hi")
    assert [m.token for m in push_fake_fcm.messages] == [alive]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"fcm_token": "not-a-token"}, "message.token"),
        ({"data_payload": {"count": 3}}, "message.data[count]"),
        ({"data_payload": {"from": "me"}}, "Invalid data payload key: from"),
        ({"android_config": {"ttl": 3600}}, "message.android.ttl"),
        ({"android_config": {"ttl": "1h"}}, "message.android.ttl"),
        ({"android_config": {"priority": "high"}}, "message.android.priority"),
        ({"android_config": {"notification": {"colour": "#fff"}}}, 'Unknown name \\"colour\\"'),
        ({"android_config": {"notification": {"title": 1}}}, "message.android.notification.title"),
        ({"topic_name": "news"}, "Exactly one of token, topic or condition"),
        ({"fcm_options": {"label": "x"}}, 'Unknown name \\"label\\"'),
    ],
)
def test_invalid_message_raises_invalid_data(
    push_fake_fcm: FakeFCM, client: FCMNotification, options: dict[str, Any], needle: str
) -> None:
    options.setdefault("fcm_token", make_registration_token())
    with pytest.raises(InvalidDataError) as caught:
        client.notify(notification_title="Hi", **options)
    assert "INVALID_ARGUMENT" in str(caught.value) and needle in str(caught.value)
    assert push_fake_fcm.messages == []


def test_camel_case_fields_are_accepted(push_fake_fcm: FakeFCM, client: FCMNotification) -> None:
    android = {"collapseKey": "c", "notification": {"clickAction": "OPEN", "channelId": "main"}}
    client.notify(fcm_token=make_registration_token(), android_config=android)
    assert push_fake_fcm.messages[0].android == android


def test_wrong_project_raises_sender_id_mismatch(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    # pyfcm takes the project from the credentials, so a mismatch comes from there.
    client = pyfcm_client(push_fake_fcm, {**account, "project_id": "someone-else"})
    with pytest.raises(FCMSenderIdMismatchError):
        client.notify(fcm_token=make_registration_token(), notification_title="Hi")
    assert push_fake_fcm.messages == []


def test_wrong_project_error_shape(push_fake_fcm: FakeFCM, access_token: str) -> None:
    body = {"message": {"topic": "news"}}
    response = send(push_fake_fcm, access_token, body, project="someone-else")
    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": 403,
            "message": "SenderId mismatch",
            "status": "PERMISSION_DENIED",
            "details": [{"@type": FCM_ERROR, "errorCode": "SENDER_ID_MISMATCH"}],
        }
    }


def test_server_error_raises_then_recovers(push_fake_fcm: FakeFCM, client: FCMNotification) -> None:
    token = make_registration_token()
    push_fake_fcm.fail_next(500, "INTERNAL")
    with pytest.raises(FCMServerError):
        client.notify(fcm_token=token, notification_title="Hi")
    client.notify(fcm_token=token, notification_title="Hi")
    assert len(push_fake_fcm.messages) == 1 and push_fake_fcm.send_attempts == 2


def test_pyfcm_retries_503_itself(push_fake_fcm: FakeFCM, client: FCMNotification) -> None:
    # pyfcm mounts urllib3's Retry(status_forcelist=[502, 503]) for POST too;
    # the first retry comes without delay.
    push_fake_fcm.fail_next(503, "UNAVAILABLE")
    client.notify(fcm_token=make_registration_token(), notification_title="Hi")
    assert push_fake_fcm.send_attempts == 2 and len(push_fake_fcm.messages) == 1


def test_quota_without_retry_after_raises_server_error(
    push_fake_fcm: FakeFCM, client: FCMNotification
):
    push_fake_fcm.fail_next(429, "QUOTA_EXCEEDED")
    with pytest.raises(FCMServerError, match="429"):
        client.notify(fcm_token=make_registration_token(), notification_title="Hi")


def test_failure_for_one_token_only(push_fake_fcm: FakeFCM, client: FCMNotification) -> None:
    target, other = make_registration_token(), make_registration_token()
    push_fake_fcm.fail_next(500, "INTERNAL", token=target, times=2)
    client.notify(fcm_token=other, notification_title="Hi")
    for _ in range(2):
        with pytest.raises(FCMServerError):
            client.notify(fcm_token=target, notification_title="Hi")
    client.notify(fcm_token=target, notification_title="Hi")
    assert [m.token for m in push_fake_fcm.messages] == [other, target]


def test_expired_access_token_is_refreshed_by_pyfcm(
    push_fake_fcm: FakeFCM, client: FCMNotification
):
    token = make_registration_token()
    client.notify(fcm_token=token, notification_title="one")
    push_fake_fcm.expire_tokens()
    client.notify(fcm_token=token, notification_title="two")
    first, second = push_fake_fcm.messages
    assert first.access_token != second.access_token


def test_key_the_fake_did_not_issue_is_refused(push_fake_fcm: FakeFCM) -> None:
    # google-auth's RefreshError reaches the caller as pyfcm's InvalidDataError.
    stranger = foreign_service_account(
        project_id="flask-push-test", token_uri=push_fake_fcm.token_uri
    )
    client = pyfcm_client(push_fake_fcm, stranger)
    with pytest.raises(InvalidDataError, match="account not found"):
        client.notify(fcm_token=make_registration_token(), notification_title="Hi")
    assert push_fake_fcm.send_attempts == 0


# -- plain HTTP -------------------------------------------------------------------


def test_quota_exceeded_with_retry_after(push_fake_fcm: FakeFCM, access_token: str) -> None:
    push_fake_fcm.fail_next(429, "QUOTA_EXCEEDED", retry_after=7, times=2)
    body = {"message": {"token": make_registration_token(), "data": {"k": "v"}}}
    for _ in range(2):
        response = send(push_fake_fcm, access_token, body)
        assert response.status_code == 429 and response.headers["Retry-After"] == "7"
        error = response.json()["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED" and error["code"] == 429
        assert error["details"] == [{"@type": FCM_ERROR, "errorCode": "QUOTA_EXCEEDED"}]
    response = send(push_fake_fcm, access_token, body)
    assert response.status_code == 200 and "Retry-After" not in response.headers
    assert response.json() == {"name": push_fake_fcm.messages[0].name}


def test_unavailable_error_shape(push_fake_fcm: FakeFCM, access_token: str) -> None:
    push_fake_fcm.fail_next(503, "UNAVAILABLE")
    response = send(push_fake_fcm, access_token, {"message": {"topic": "news"}})
    assert response.status_code == 503
    assert response.json()["error"]["status"] == "UNAVAILABLE"


def test_unregistered_error_shape(push_fake_fcm: FakeFCM, access_token: str) -> None:
    token = make_registration_token()
    push_fake_fcm.unregister(token)
    response = send(push_fake_fcm, access_token, {"message": {"token": token}})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "status": "NOT_FOUND",
            "details": [{"@type": FCM_ERROR, "errorCode": "UNREGISTERED"}],
        }
    }


@pytest.mark.parametrize("authorization", [None, "ya29.made-up"])
def test_send_needs_an_issued_bearer_token(
    push_fake_fcm: FakeFCM, authorization: str | None
) -> None:
    response = send(push_fake_fcm, authorization, {"message": {"topic": "news"}})
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert push_fake_fcm.messages == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": {"token": "t" * 40, "topic": "news"}}, "message"),
        ({"message": {}}, "message"),
        ({"message": {"topic": "news", "badge": 1}}, "message.badge"),
        ({"message": {"topic": "news"}, "extra": True}, "extra"),
        ({"message": {"topic": "news", "notification": {"title": ["x"]}}}, None),
        (
            {"message": {"topic": "news", "notification": {"icon": "x"}}},
            "message.notification.icon",
        ),
        ({"message": {"topic": "news", "data": {"a": None}}}, "message.data[a]"),
        ({"message": {"topic": "news", "android": {"ttl": "2419201s"}}}, "message.android.ttl"),
        ({"message": {"topic": "news", "android": {"priority": "URGENT"}}}, None),
        ({"message": {"topic": "news", "webpush": {"headers": {"TTL": 60}}}}, None),
        ({"message": {"topic": "bad topic"}}, "message.topic"),
        ({"notification": {"title": "x"}}, "notification"),
        (["message"], ""),
    ],
)
def test_invalid_bodies_get_fcm_errors(
    push_fake_fcm: FakeFCM, access_token: str, body: Any, field: str | None
) -> None:
    assert_invalid_argument(send(push_fake_fcm, access_token, body), field)
    assert push_fake_fcm.messages == []


def test_valid_body_with_every_block(push_fake_fcm: FakeFCM, access_token: str) -> None:
    message = {
        "condition": "'news' in topics && 'sport' in topics",
        "notification": {"title": "t", "body": "b"},
        "data": {"a": "1"},
        "android": {
            "ttl": "0.5s",
            "priority": "NORMAL",
            "restricted_package_name": "com.example",
            "direct_boot_ok": True,
            "fcm_options": {"analytics_label": "l"},
            "notification": {
                "channel_id": "c",
                "click_action": "OPEN",
                "body_loc_args": ["a"],
                "notification_priority": "PRIORITY_HIGH",
                "visibility": "PUBLIC",
                "notification_count": 3,
                "event_time": "2026-01-01T00:00:00Z",
                "vibrate_timings": ["0.1s", "0.2s"],
            },
        },
        "apns": {"headers": {"apns-push-type": "alert"}, "payload": {"aps": {"sound": "x"}}},
        "webpush": {
            "headers": {"Urgency": "high"},
            "data": {"x": "y"},
            "notification": {"title": "t", "actions": []},
            "fcm_options": {"link": "https://example.com/inbox"},
        },
        "fcm_options": {"analytics_label": "campaign"},
    }
    response = send(push_fake_fcm, access_token, {"message": message, "validate_only": False})
    assert response.status_code == 200, response.text
    [received] = push_fake_fcm.messages
    assert received.condition == message["condition"] and received.message == message
    assert received.webpush == message["webpush"]


# -- the token endpoint ----------------------------------------------------------


def assertion(info: dict[str, str], **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": info["client_email"],
        "aud": info["token_uri"],
        "scope": FCM_SCOPE,
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return jwt.encode(
        payload, info["private_key"], algorithm="RS256", headers={"kid": info["private_key_id"]}
    )


def token_request(fake: FakeFCM, grant: str, **form: str) -> Any:
    data = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": grant}
    return requests.post(fake.token_uri, data={**data, **form}, timeout=5)


def test_token_endpoint_grants_a_good_assertion(
    push_fake_fcm: FakeFCM, account: dict[str, str]
) -> None:
    response = token_request(push_fake_fcm, assertion(account))
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"access_token", "expires_in", "token_type"}
    assert answer["expires_in"] == 3600 and answer["token_type"] == "Bearer"
    # google-auth signs for Google's endpoint, whatever token_uri says: accepted too.
    google = assertion(account, aud="https://oauth2.googleapis.com/token")
    assert token_request(push_fake_fcm, google).status_code == 200


def other_key_pem() -> str:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"aud": "https://example.com/token"}, "invalid_grant"),
        ({"scope": "https://www.googleapis.com/auth/userinfo.email"}, "invalid_scope"),
        ({"scope": ""}, "invalid_scope"),  # what google-auth sends without scopes
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, "invalid_grant"),
        ({"exp": int(time.time()) + 7200}, "invalid_grant"),
        ({"iss": "nobody@flask-push-test.iam.gserviceaccount.com"}, "invalid_grant"),
        ({"key": "other"}, "invalid_grant"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
    ],
)
def test_token_endpoint_refuses_bad_grants(
    push_fake_fcm: FakeFCM, account: dict[str, str], change: dict[str, Any], error: str
) -> None:
    change = dict(change)
    form = {}
    if "grant_type" in change:
        form["grant_type"] = change.pop("grant_type")
    info = dict(account)
    if change.pop("key", None):
        info["private_key"] = other_key_pem()
    response = token_request(push_fake_fcm, assertion(info, **change), **form)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_token_endpoint_refuses_garbage(push_fake_fcm: FakeFCM) -> None:
    response = token_request(push_fake_fcm, "not.a.jwt")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


# -- lifecycle ---------------------------------------------------------------------


def test_service_accounts_reset_and_stop(push_fake_fcm: FakeFCM) -> None:
    # (Starting and stopping are every fake's: in test_fake_service.py.)
    with pytest.raises(RuntimeError):
        _ = FakeFCM().base_url
    fake = push_fake_fcm
    assert fake.base_url.startswith("http://127.0.0.1:")
    info = fake.service_account(project_id="shop-1")
    assert info["type"] == "service_account" and info["project_id"] == "shop-1"
    assert info["token_uri"] == f"{fake.base_url}/token"
    assert info["client_email"].endswith("@shop-1.iam.gserviceaccount.com")
    client = pyfcm_client(fake, info)
    client.notify(topic_name="news", notification_title="Hi")
    fake.unregister("x" * 40)
    fake.fail_next(500, "INTERNAL")
    fake.reset()
    assert fake.messages == [] and fake.send_attempts == 0
    client.notify(topic_name="news", notification_title="again")  # no failure left
    assert fake.messages[0].project_id == "shop-1"
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{fake.base_url}/token", timeout=1)


def test_auth_error_is_authentication_error(
    push_fake_fcm: FakeFCM, client: FCMNotification
) -> None:
    # A 401 without ACCESS_TOKEN_EXPIRED is not retried by pyfcm.
    push_fake_fcm.fail_next(401, "THIRD_PARTY_AUTH_ERROR")
    with pytest.raises(AuthenticationError):
        client.notify(fcm_token=make_registration_token(), notification_title="Hi")
