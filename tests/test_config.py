"""init_app checks every PUSH_* key and names the key and the fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from test_sigkill import HOST_APP

from flask_push import ProviderNotInstalled, PushConfigError

from conftest import browser_keys, pem, service_account


def apns_config(**overrides):
    config = {
        "PUSH_APNS_KEY": pem(ec.generate_private_key(ec.SECP256R1())),
        "PUSH_APNS_KEY_ID": "ABC123DEFG",
        "PUSH_APNS_TEAM_ID": "DEF123GHIJ",
        "PUSH_APNS_TOPIC": "com.example.shop",
    }
    config.update(overrides)
    return config


def test_defaults(app):
    settings = app.extensions["push"].settings
    assert settings.url_prefix == "/push"
    assert settings.queue == "thread"
    assert settings.backplane_url == "memory://"
    assert settings.default_ttl == 86400
    assert settings.allow_http_endpoints is False
    assert settings.suppress_send_config is None and settings.suppresses_send(app)  # testing
    assert settings.service_worker_url == "/push-sw.js"
    assert "fcm.googleapis.com" in settings.endpoint_hosts
    assert "*.push.apple.com" in settings.endpoint_hosts
    assert "*.notify.windows.com" in settings.endpoint_hosts
    assert "updates.push.services.mozilla.com" in settings.endpoint_hosts
    assert set(settings.providers) == {"webpush"}


@pytest.mark.parametrize(
    ("config", "key", "hint"),
    [
        (
            {"PUSH_VAPID_PRIVATE_KEY": "not-a-key"},
            "PUSH_VAPID_PRIVATE_KEY",
            "flask push vapid-keys",
        ),
        ({"PUSH_VAPID_SUBJECT": "ops@shop.example"}, "PUSH_VAPID_SUBJECT", "mailto:"),
        (
            {"PUSH_VAPID_SUBJECT": None},
            "PUSH_VAPID_SUBJECT",
            "is required (a contact URI: `mailto:you@example.com` or `https://example.com`)",
        ),
        ({"PUSH_VAPID_PUBLIC_KEY": "BOGUS"}, "PUSH_VAPID_PUBLIC_KEY", "is not a P-256 public key"),
        (
            {"PUSH_VAPID_PRIVATE_KEY": None},
            "PUSH_VAPID_PRIVATE_KEY",
            "required when PUSH_VAPID_SUBJECT",
        ),
        ({"PUSH_QUEUE": "rq"}, "PUSH_QUEUE", "thread, inline, celery"),
        ({"PUSH_QUEUE": "celery"}, "PUSH_CELERY_BROKER_URL", "redis://"),
        ({"PUSH_BACKPLANE_URL": "kafka://x"}, "PUSH_BACKPLANE_URL", "redis://"),
        # what redis-py would fail on later, or read as database 0
        ({"PUSH_BACKPLANE_URL": "redis://h:notaport/7"}, "PUSH_BACKPLANE_URL", "port that is"),
        ({"PUSH_BACKPLANE_URL": "redis://h/abc"}, "PUSH_BACKPLANE_URL", "a database that is"),
        # an option redis-py refuses (at the first publish, and /health answered 500)
        (
            {"PUSH_BACKPLANE_URL": "redis://127.0.0.1:6379/0?socket_timeout=5s"},
            "PUSH_BACKPLANE_URL",
            "redis-py refuses it (Invalid value for 'socket_timeout'",
        ),
        # URLs Python cannot read: a bare ValueError that named no key
        (
            {"PUSH_BACKPLANE_URL": "redis://:s3cret@[::1:6379/0"},
            "PUSH_BACKPLANE_URL",
            "is not a URL (Invalid IPv6 URL); got 'redis://:***@[::1:6379/0'",
        ),
        (
            {"PUSH_QUEUE": "celery", "PUSH_CELERY_BROKER_URL": "redis://:s3cret@[::1/0"},
            "PUSH_CELERY_BROKER_URL",
            "is not a URL (Invalid IPv6 URL); got 'redis://:***@[::1/0'",
        ),
        # what Celery would read as the AMQP broker on host "not a url", or never reach
        (
            {"PUSH_QUEUE": "celery", "PUSH_CELERY_BROKER_URL": "not a url"},
            "PUSH_CELERY_BROKER_URL",
            "Celery broker URL",
        ),
        (
            {"PUSH_QUEUE": "celery", "PUSH_CELERY_BROKER_URL": "http://x"},
            "PUSH_CELERY_BROKER_URL",
            "Celery broker URL",
        ),
        (
            {"PUSH_QUEUE": "celery", "PUSH_CELERY_BROKER_URL": "redis://:s3cret@h/x"},
            "PUSH_CELERY_BROKER_URL",
            "got 'redis://:***@h/x'",  # the password is not said
        ),
        (  # nor any of a failover list's, whatever it holds
            {"PUSH_QUEUE": "celery", "PUSH_CELERY_BROKER_URL": "amqp://u:s/1@a//;x://u:s2@b//"},
            "PUSH_CELERY_BROKER_URL",
            "got 'amqp://u:***@a//;x://u:***@b//'",
        ),
        ({"PUSH_BACKPLANE_PREFIX": "a b"}, "PUSH_BACKPLANE_PREFIX", "letters, digits"),
        ({"PUSH_EVENTS_KEEP_SECONDS": 0}, "PUSH_EVENTS_KEEP_SECONDS", "whole number"),
        ({"PUSH_EVENTS_KEEP_COUNT": "100"}, "PUSH_EVENTS_KEEP_COUNT", "whole number"),
        ({"PUSH_WS_HEARTBEAT": -1}, "PUSH_WS_HEARTBEAT", "whole number"),
        ({"PUSH_WS_MAX_MESSAGE_BYTES": 10}, "PUSH_WS_MAX_MESSAGE_BYTES", "whole number"),
        ({"PUSH_WS_QUEUE_SIZE": 0}, "PUSH_WS_QUEUE_SIZE", "whole number"),
        ({"PUSH_WS_MAX_PER_USER": 0}, "PUSH_WS_MAX_PER_USER", "whole number"),
        ({"PUSH_WS_MAX_PER_USER": "5"}, "PUSH_WS_MAX_PER_USER", "whole number"),
        ({"PUSH_DEFAULT_TTL": -1}, "PUSH_DEFAULT_TTL", "whole number"),
        ({"PUSH_DEFAULT_TTL": "3600"}, "PUSH_DEFAULT_TTL", "whole number"),
        ({"PUSH_URL_PREFIX": "push"}, "PUSH_URL_PREFIX", "starting with '/'"),
        ({"PUSH_URL_PREFIX": "/"}, "PUSH_URL_PREFIX", "below the root, such as '/push'"),
        ({"PUSH_SERVICE_WORKER_URL": "//evil.example/sw.js"}, "PUSH_SERVICE_WORKER_URL", "'/'"),
        ({"PUSH_URL_PREFIX": "/pu sh"}, "PUSH_URL_PREFIX", "no space"),
        ({"PUSH_URL_PREFIX": "/a\x00b"}, "PUSH_URL_PREFIX", "no space"),
        ({"PUSH_URL_PREFIX": "/push?x=1"}, "PUSH_URL_PREFIX", "no space"),
        # routes match the decoded path: these were taken and never answered
        ({"PUSH_URL_PREFIX": "/p%75sh"}, "PUSH_URL_PREFIX", "no '%' escapes"),
        ({"PUSH_SERVICE_WORKER_URL": "/push%20sw.js"}, "PUSH_SERVICE_WORKER_URL", "no '%'"),
        # it answered for the site's home page, with JavaScript
        ({"PUSH_SERVICE_WORKER_URL": "/"}, "PUSH_SERVICE_WORKER_URL", "not the site's home"),
        # the websocket's own route
        ({"PUSH_SERVICE_WORKER_URL": "/push/ws"}, "PUSH_SERVICE_WORKER_URL", "PUSH_URL_PREFIX"),
        ({"PUSH_ALLOW_HTTP_ENDPOINTS": "yes"}, "PUSH_ALLOW_HTTP_ENDPOINTS", "True or False"),
        ({"PUSH_SUPPRESS_SEND": 1}, "PUSH_SUPPRESS_SEND", "True or False"),
        ({"PUSH_ENDPOINT_HOSTS": [""]}, "PUSH_ENDPOINT_HOSTS", "host patterns"),
        ({"PUSH_ENDPOINT_HOSTS": []}, "PUSH_ENDPOINT_HOSTS", "no browser could subscribe"),
        ({"PUSH_ENDPOINT_HOSTS": " , "}, "PUSH_ENDPOINT_HOSTS", "leave it unset"),
        # patterns no endpoint host could match: hosts are ASCII, addresses canonical
        ({"PUSH_ENDPOINT_HOSTS": ["①②⑦.0.0.1"]}, "PUSH_ENDPOINT_HOSTS", "xn--"),
        ({"PUSH_ENDPOINT_HOSTS": ["push.example\\x"]}, "PUSH_ENDPOINT_HOSTS", "ASCII letters"),
        ({"PUSH_ENDPOINT_HOSTS": ["127.1"]}, "PUSH_ENDPOINT_HOSTS", "'127.0.0.1'"),
        ({"PUSH_ENDPOINT_HOSTS": ["0x7f.0.0.1"]}, "PUSH_ENDPOINT_HOSTS", "canonical"),
        ({"PUSH_ENDPOINT_HOSTS": ["::ffff:127.0.0.1"]}, "PUSH_ENDPOINT_HOSTS", "'127.0.0.1'"),
        ({"PUSH_MAX_REQUEST_BYTES": 10}, "PUSH_MAX_REQUEST_BYTES", "whole number"),
        ({"PUSH_SUBSCRIBE_RATE_LIMIT": "lots"}, "PUSH_SUBSCRIBE_RATE_LIMIT", "'30/minute'"),
        ({"PUSH_SUBSCRIBE_RATE_LIMIT": 30}, "PUSH_SUBSCRIBE_RATE_LIMIT", "or None for no limit"),
        ({"PUSH_SUBSCRIBE_RATE_LIMIT": "0/minute"}, "PUSH_SUBSCRIBE_RATE_LIMIT", "'30/minute'"),
        ({"PUSH_SUBSCRIBE_RATE_LIMIT": ""}, "PUSH_SUBSCRIBE_RATE_LIMIT", "'30/minute'"),
        ({"PUSH_WS_RATE_LIMIT": "lots"}, "PUSH_WS_RATE_LIMIT", "'1200/minute'"),
        ({"PUSH_WS_RATE_LIMIT": 20}, "PUSH_WS_RATE_LIMIT", "or None for no limit"),
        ({"PUSH_WS_RATE_LIMIT": "0/second"}, "PUSH_WS_RATE_LIMIT", "one rate"),
        # a token bucket has one rate
        ({"PUSH_WS_RATE_LIMIT": "20/second;1200/minute"}, "PUSH_WS_RATE_LIMIT", "one rate"),
        ({"PUSH_MAX_TOPICS": 0}, "PUSH_MAX_TOPICS", "whole number"),
        ({"PUSH_MAX_TOPICS": 5000}, "PUSH_MAX_TOPICS", "whole number"),
        (
            {"PUSH_FCM_PROJECT_ID": "shop"},
            "PUSH_FCM_CREDENTIALS",
            "required when PUSH_FCM_PROJECT_ID",
        ),
        (
            {"PUSH_FCM_CREDENTIALS": "/nonexistent/sa.json"},
            "PUSH_FCM_CREDENTIALS",
            "cannot be read",
        ),
        (
            {"PUSH_FCM_CREDENTIALS": {"type": "service_account"}},
            "PUSH_FCM_CREDENTIALS",
            "client_email",
        ),
        (
            {"PUSH_FCM_CREDENTIALS": service_account(private_key="nope")},
            "PUSH_FCM_CREDENTIALS",
            "PEM",
        ),
        (
            {"PUSH_FCM_CREDENTIALS": service_account(project_id=None)},
            "PUSH_FCM_PROJECT_ID",
            "required",
        ),
        (
            {"PUSH_FCM_CREDENTIALS": service_account(), "PUSH_FCM_BASE_URL": "ftp://x"},
            "PUSH_FCM_BASE_URL",
            "http(s)",
        ),
        ({"PUSH_APNS_TEAM_ID": "DEF123GHIJ"}, "PUSH_APNS_KEY", "required when PUSH_APNS_TEAM_ID"),
        (apns_config(PUSH_APNS_KEY_ID=None), "PUSH_APNS_KEY_ID", "required (the auth key's 10-"),
        (apns_config(PUSH_APNS_TEAM_ID="short"), "PUSH_APNS_TEAM_ID", "10-character"),
        (apns_config(PUSH_APNS_TOPIC="shop"), "PUSH_APNS_TOPIC", "bundle id"),
        (
            apns_config(PUSH_APNS_KEY="-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----"),
            "PUSH_APNS_KEY",
            ".p8",
        ),
        (apns_config(PUSH_APNS_SANDBOX="no"), "PUSH_APNS_SANDBOX", "true or false"),
        (apns_config(PUSH_APNS_BASE_URL="http://127.0.0.1:2197"), "PUSH_APNS_BASE_URL", "https"),
        # alone (no key or credentials here): providers stored through the API use them
        ({"PUSH_FCM_BASE_URL": "ftp://x"}, "PUSH_FCM_BASE_URL", "http(s) origin"),
        ({"PUSH_APNS_SANDBOX": "yes"}, "PUSH_APNS_SANDBOX", "true or false"),
        ({"PUSH_APNS_BASE_URL": "http://apns.example"}, "PUSH_APNS_BASE_URL", "https"),
    ],
)
def test_bad_config_names_the_key_and_the_fix(make_app, config, key, hint):
    with pytest.raises(PushConfigError) as info:
        make_app(**config)
    message = str(info.value)
    assert message.startswith(key), message
    assert hint in message


def test_an_all_digit_value_from_the_environment_says_to_quote_it(make_app, monkeypatch):
    # Flask's from_prefixed_env parses values as JSON: an all-digit Key ID becomes an
    # int, which was refused as "must be a string" with no word of why
    key = "PUSH_APNS_KEY_ID"
    monkeypatch.setenv(f"FLASK_{key}", "1234567890")
    with pytest.raises(PushConfigError) as info:
        make_app(before=lambda app: app.config.from_prefixed_env(), **apns_config())
    message = str(info.value)
    assert message.startswith(f"{key} must be a"), message
    assert "(got 1234567890: `app.config.from_prefixed_env()` parses each value as JSON" in message
    assert message.endswith(f"""quote it in the environment: FLASK_{key}='"1234567890"')"""), (
        message
    )


@pytest.mark.parametrize(
    ("key", "extra"),
    [
        ("PUSH_METRICS_TOKEN", {}),
        ("PUSH_VAPID_PRIVATE_KEY", {}),
        ("PUSH_FCM_CREDENTIALS", {}),
        ("PUSH_APNS_KEY", apns_config()),
    ],
)
def test_an_all_digit_secret_is_refused_without_its_value(make_app, monkeypatch, key, extra):
    # the error goes to logs and CI output: it said the secret itself, twice
    monkeypatch.setenv(f"FLASK_{key}", "98765432109")
    with pytest.raises(PushConfigError) as info:
        make_app(before=lambda app: app.config.from_prefixed_env(), **extra)
    message = str(info.value)
    assert "98765432109" not in message, message
    assert message.startswith(f"{key} must be"), message
    assert "(got a number: `app.config.from_prefixed_env()` parses each value as JSON" in message
    assert message.endswith(f"""FLASK_{key}='"<its digits>"')"""), message


@pytest.mark.parametrize(
    "pasted",
    [
        # a key's body without its -----BEGIN line, on one line and as PEM lines
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgs3cr3tK3yB0dy",
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\ns3cr3tK3yB0dy\n",
    ],
)
def test_a_key_pasted_without_its_first_line_is_not_repeated(make_app, pasted):
    """Read as a file's name, it cannot be opened: the error said the value, the
    secret itself, into logs and CI output. A path is still said."""
    with pytest.raises(PushConfigError) as info:
        make_app(**apns_config(PUSH_APNS_KEY=pasted))
    message = str(info.value)
    assert "s3cr3t" not in message, message
    assert message.endswith(
        "(not shown: it does not look like a path, and may be the secret itself without "
        "its '-----BEGIN')"
    ), message
    with pytest.raises(PushConfigError) as info:
        make_app(**apns_config(PUSH_APNS_KEY="~/keys/AuthKey_ABC123DEFG.p8"))
    assert str(info.value).endswith(": '~/keys/AuthKey_ABC123DEFG.p8'")


def test_a_metrics_token_of_another_type_is_refused_without_its_value(make_app):
    with pytest.raises(PushConfigError) as info:
        make_app(PUSH_METRICS_TOKEN=["s3cr3t-token"])
    assert str(info.value) == ("PUSH_METRICS_TOKEN must be a non-empty string or None, got a list")


def test_pem_and_der_vapid_keys_are_accepted(make_app):
    key = ec.generate_private_key(ec.SECP256R1())
    app = make_app(PUSH_VAPID_PRIVATE_KEY=pem(key))
    expected = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    import base64

    assert (
        base64.urlsafe_b64decode(app.extensions["push"].settings.vapid_public_key + "==")
        == expected
    )


def test_vapid_public_key_is_compared_as_a_key_not_as_text(make_app):
    """The public key of the private one, given as standard base64 or as PEM (as
    other tools write it), is that key: it used to be called one of another pair."""
    import base64

    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    wanted = base64.urlsafe_b64encode(point).decode().rstrip("=")
    for given in (base64.b64encode(point).decode(), public_pem.decode(), wanted + "="):
        app = make_app(PUSH_VAPID_PRIVATE_KEY=pem(key), PUSH_VAPID_PUBLIC_KEY=given)
        assert app.extensions["push"].settings.vapid_public_key == wanted
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_point = other.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    with pytest.raises(PushConfigError, match="does not belong to the private key"):
        make_app(
            PUSH_VAPID_PRIVATE_KEY=pem(key),
            PUSH_VAPID_PUBLIC_KEY=base64.urlsafe_b64encode(other_point).decode(),
        )


def test_a_vapid_public_key_of_another_curve_is_said_to_be_no_p256_key(make_app):
    """A PEM public key of P-384 (an ES384 key from another setup) is no Web Push key
    at all: said so, not that it belongs to another private key."""
    key = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    public_pem = p384.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(PushConfigError, match="is not a P-256 public key"):
        make_app(PUSH_VAPID_PRIVATE_KEY=pem(key), PUSH_VAPID_PUBLIC_KEY=public_pem.decode())


def test_rsa_key_is_not_a_vapid_key(make_app):
    rsa_pem = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(PushConfigError, match="PUSH_VAPID_PRIVATE_KEY"):
        make_app(PUSH_VAPID_PRIVATE_KEY=rsa_pem)


def test_web_push_is_optional(make_app):
    app = make_app(PUSH_VAPID_PRIVATE_KEY=None, PUSH_VAPID_SUBJECT=None)
    response = app.test_client().get("/push/vapid-public-key")
    assert response.status_code == 503
    assert response.json["error"]["code"] == "webpush_not_configured"
    assert "flask push vapid-keys" in response.json["error"]["message"]


def test_fcm_credentials_from_a_file_or_a_dict(make_app, tmp_path):
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(service_account()))
    app = make_app(PUSH_FCM_CREDENTIALS=str(path))
    fcm = app.extensions["push"].settings.providers["fcm"]
    assert fcm["projectId"] == "shop-123"
    assert fcm["baseUrl"] == "https://fcm.googleapis.com"
    app = make_app(
        PUSH_FCM_CREDENTIALS=service_account(),
        PUSH_FCM_PROJECT_ID="other",
        PUSH_FCM_BASE_URL="http://127.0.0.1:9999/",
    )
    fcm = app.extensions["push"].settings.providers["fcm"]
    assert (fcm["projectId"], fcm["baseUrl"]) == ("other", "http://127.0.0.1:9999")


def test_fcm_credentials_that_are_not_json_name_the_key(make_app, tmp_path):
    # Text that looks like JSON but is not, given or read from a file, was a bare
    # JSONDecodeError out of init_app; it is a PushConfigError naming the key.
    path = tmp_path / "service-account.json"
    path.write_text('{"type": "service_account",')
    for value in ('{"type": "service_account",', str(path)):
        with pytest.raises(PushConfigError, match="PUSH_FCM_CREDENTIALS must be the service"):
            make_app(PUSH_FCM_CREDENTIALS=value)


def test_apns_key_from_a_file_and_sandbox_follows_debug(make_app, tmp_path):
    config = apns_config()
    path = tmp_path / "AuthKey_ABC123DEFG.p8"
    path.write_text(config.pop("PUSH_APNS_KEY"))
    app = make_app(PUSH_APNS_KEY=str(path), DEBUG=True, **config)
    apns = app.extensions["push"].settings.providers["apns"]
    assert apns["sandbox"] is True
    assert apns["key"].startswith("-----BEGIN PRIVATE KEY-----")
    app = make_app(**apns_config(PUSH_APNS_SANDBOX=False))
    assert app.extensions["push"].settings.providers["apns"]["sandbox"] is False


def test_endpoint_hosts_as_a_comma_separated_string(make_app):
    app = make_app(PUSH_ENDPOINT_HOSTS="push.example.com, *.push.example.net")
    assert app.extensions["push"].settings.endpoint_hosts == (
        "push.example.com",
        "*.push.example.net",
    )


def test_endpoint_hosts_are_compared_in_the_form_endpoints_are_read(make_app):
    app = make_app(
        PUSH_ENDPOINT_HOSTS=["[::1]", "0:0::1:2", " Web.Push.Apple.COM. ", "*.Example"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    hosts = app.extensions["push"].settings.endpoint_hosts
    assert hosts == ("::1", "::1:2", "web.push.apple.com", "*.example")
    body = {"endpoint": "http://[::1]:8080/push/x", "keys": browser_keys()}
    assert app.test_client().post("/push/subscriptions", json=body).status_code == 201


def test_redis_backplane_url(make_app):
    app = make_app(PUSH_BACKPLANE_URL="redis://127.0.0.1:6379/1")
    assert app.extensions["push"].settings.backplane_url == "redis://127.0.0.1:6379/1"


def test_missing_optional_dependency_names_the_extra(make_app, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyfcm" else real(name, *a)
    )
    with pytest.raises(ProviderNotInstalled, match=r"pip install (-e )?'\S*\[fcm\]'") as info:
        make_app(PUSH_FCM_CREDENTIALS=service_account())
    assert isinstance(info.value, ImportError) and isinstance(info.value, PushConfigError)


WITHOUT_EXTRAS = """
import json, os, sys
for name in ("pyfcm", "aioapns", "h2"):
    sys.modules[name] = None  # as if the fcm and apns extras were not installed
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from flask_push import ProviderNotInstalled, Push
from flask_push.providers import kinds

print(sorted(kinds()))
for config in json.loads(os.environ["CONFIGS"]):
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", **config)
    db = SQLAlchemy()
    db.init_app(app)
    try:
        Push(db=db).init_app(app)
    except ProviderNotInstalled as err:
        print(err)
"""


def test_kinds_are_read_without_the_extras(tmp_path):
    # The registry reads every kind (settings, checks) from its provider module without
    # importing the client library, so a missing extra is named, not an ImportError.
    import os
    import subprocess
    import sys

    configs = [{"PUSH_FCM_CREDENTIALS": service_account()}, apns_config()]
    env = dict(os.environ, CONFIGS=json.dumps(configs))
    child = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS], env=env, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "['apns', 'fcm', 'webpush']"
    assert re.search(r"pip install (-e )?'\S*\[fcm\]'", lines[1]), lines[1]
    assert re.search(r"pip install (-e )?'\S*\[apns\]'", lines[2]), lines[2]


def test_ws_allowed_origins_are_normalized(make_app):
    assert make_app().extensions["push"].settings.ws_allowed_origins == ()
    app = make_app(
        PUSH_WS_ALLOWED_ORIGINS=[
            "HTTPS://App.Shop.Example:443/",
            "https://app.shop.example",
            "http://localhost:5173",
            "http://localhost:80",
            "capacitor://localhost",
            "https://[::1]:8443",
        ]
    )
    assert app.extensions["push"].settings.ws_allowed_origins == (
        "capacitor://localhost",
        "http://localhost",
        "http://localhost:5173",
        "https://[::1]:8443",
        "https://app.shop.example",
    )


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("https://app.shop.example", "must be a list"),  # a string, not a list
        (["*"], "'*' would let every site"),
        (["null"], "must be an origin"),
        (["app.shop.example"], "scheme"),
        (["https://app.shop.example/app"], "no path"),
        (["https://*.shop.example"], "must be an origin"),
        (["https://alice@app.shop.example"], "must be an origin"),
        (["https://app.shop.example:0"], "port"),
        (["https://app.shop.example:65536"], "port"),
        (["https://bücher.example"], "xn--"),
        ([None], "must be an origin"),
    ],
)
def test_bad_ws_allowed_origins_are_refused(make_app, value, hint):
    with pytest.raises(PushConfigError) as info:
        make_app(PUSH_WS_ALLOWED_ORIGINS=value)
    message = str(info.value)
    assert message.startswith("PUSH_WS_ALLOWED_ORIGINS"), message
    assert hint in message


def test_site_url_is_normalized(make_app):
    assert make_app().extensions["push"].settings.site_url is None
    for given, kept in [
        ("https://shop.example", "https://shop.example/"),
        ("HTTPS://Shop.Example:8443/store/", "https://shop.example:8443/store/"),
        ("http://localhost:5000", "http://localhost:5000/"),
    ]:
        assert make_app(PUSH_SITE_URL=given).extensions["push"].settings.site_url == kept


@pytest.mark.parametrize(
    "value",
    [
        "shop.example",
        "/orders",
        "ftp://shop.example",
        "https://",
        "https://alice@shop.example",
        "https://shop.example?ref=push",
        "https://shop.example/#top",
        "https://shop.example:65536",
        "https://bücher.example",
        "https://shop.example/a b",
        42,
    ],
)
def test_a_bad_site_url_is_refused(make_app, value):
    with pytest.raises(PushConfigError) as info:
        make_app(PUSH_SITE_URL=value)
    message = str(info.value)
    assert message.startswith("PUSH_SITE_URL"), message
    assert "'https://shop.example'" in message


def test_a_push_key_it_does_not_read_is_said_with_the_likely_one(make_app, caplog):
    """A misspelt key leaves its setting at its default (FCM off, say) without a word,
    unless it is named."""
    with caplog.at_level("WARNING", logger="flask_push"):
        make_app(
            PUSH_FCM_CREDENTIAL="creds.json",
            PUSH_VAPID_PRIVATEKEY="x",
            PUSH_WHATEVER=1,
            PUSH_QUEUE="inline",  # known: not said
        )
    said = sorted(r.getMessage() for r in caplog.records if r.name == "flask_push")
    assert said == [
        "flask-push: app.config has PUSH_FCM_CREDENTIAL, which flask-push does not read; "
        "did you mean PUSH_FCM_CREDENTIALS?",
        "flask-push: app.config has PUSH_VAPID_PRIVATEKEY, which flask-push does not read; "
        "did you mean PUSH_VAPID_PRIVATE_KEY?",
        "flask-push: app.config has PUSH_WHATEVER, which flask-push does not read "
        "(a misspelt key?)",
    ]


def test_a_refusal_names_the_misspelt_key_that_may_cause_it(make_app):
    """The warning above comes only once the config loads: a refusal caused by the
    misspelling says it itself."""
    with pytest.raises(PushConfigError) as info:
        make_app(PUSH_VAPID_PRIVATE_KEY=None, PUSH_VAPID_PRIVATEKEY="x")
    assert str(info.value) == (
        "PUSH_VAPID_PRIVATE_KEY is required when PUSH_VAPID_SUBJECT is set "
        "(app.config has PUSH_VAPID_PRIVATEKEY: a misspelling?)"
    )
    # a key given with a bad value is not one: the keys read after it are not named
    with pytest.raises(PushConfigError) as info:
        make_app(PUSH_FCM_BASE_URL="ftp://x", PUSH_APNS_BASE_URL="https://apns.example")
    assert "misspelling" not in str(info.value), info.value


def test_every_documented_key_is_one_it_reads(make_app, monkeypatch):
    """The README's configuration table names no key that flask-push would call
    unknown."""
    from flask_push import config as push_config

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    documented = set(re.findall(r"^\| `(PUSH_[A-Z_]+)` \|", readme, re.M))
    assert len(documented) > 30
    seen = []

    class Seen(push_config._Asked):
        def __init__(self, config):
            super().__init__(config)
            seen.append(self)

    monkeypatch.setattr(push_config, "_Asked", Seen)
    push_config.load(make_app())
    assert documented <= seen[-1].asked, documented - seen[-1].asked


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"PUSH_DEFAULT_TTL": "3600"}, "PUSH_DEFAULT_TTL must be a whole number from 0 to "),
        (
            {"PUSH_VAPID_PRIVATE_KEY": "keys/vapid.pem", "PUSH_VAPID_SUBJECT": "mailto:a@b.c"},
            "PUSH_VAPID_PRIVATE_KEY looks like the path of a file: give the key itself",
        ),
    ],
)
def test_a_flask_command_says_a_bad_key_in_one_line(tmp_path, config, said):
    """Not a traceback through Flask's app loader with the sentence at its end."""
    (tmp_path / "host.py").write_text(HOST_APP)
    config = {"SQLALCHEMY_DATABASE_URI": "sqlite://", **config}
    env = {**os.environ, "PUSH_TEST_CONFIG": json.dumps(config), "PYTHONPATH": str(tmp_path)}
    ran = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "host:create_app", "push", "stats"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 1, ran.stderr
    assert ran.stderr.startswith(f"Error: {said}") and ran.stderr.count("\n") == 1, ran.stderr
    assert ran.stdout == ""


def test_an_extras_install_command_names_where_flask_push_came_from(monkeypatch, tmp_path):
    """flask-push is installed from a checkout (`pip install ../flask-push`), and pip
    records the folder (PEP 610): the command to add an extra names it, since
    `pip install 'flask-push[fcm]'` would look for it on a package index."""
    import importlib.metadata

    from flask_push.errors import install_command

    class Installed:
        def __init__(self, recorded: str | None) -> None:
            self.recorded = recorded

        def read_text(self, name: str) -> str | None:
            return self.recorded if name == "direct_url.json" else None

    here = tmp_path / "flask push"
    here.mkdir()
    url = here.as_uri()  # file:///.../flask%20push
    for recorded, expected in [
        (f'{{"url": "{url}", "dir_info": {{}}}}', f"pip install '{here}[fcm]'"),
        (
            f'{{"url": "{url}", "dir_info": {{"editable": true}}}}',
            f"pip install -e '{here}[fcm]'",  # stays editable
        ),
        # by name: from a package index, a folder gone since, or what is not pip's
        (None, "pip install 'flask-push[fcm]'"),
        ('{"url": "https://example.com/flask_push-0.2.tar.gz"}', "pip install 'flask-push[fcm]'"),
        ('{"url": "file:///gone/flask-push"}', "pip install 'flask-push[fcm]'"),
        ("[1, 2]", "pip install 'flask-push[fcm]'"),
    ]:
        monkeypatch.setattr(
            importlib.metadata, "distribution", lambda name, r=recorded: Installed(r)
        )
        assert install_command("fcm") == expected


def test_the_fakes_without_the_testing_extra_say_what_to_install():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['jwt'] = None\n"  # as if PyJWT were not installed
        "try:\n    import flask_push.testing\nexcept ImportError as err:\n    print(err)\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert re.fullmatch(
        r"flask_push\.testing needs flask-push's 'testing' extra \('jwt' is not installed\): "
        r"pip install (-e )?'\S+\[testing\]'\n",
        child.stdout,
    ), child.stdout


def test_a_key_set_after_init_app_is_said_once(make_app, caplog):
    """A test that sets PUSH_* keys on the app its factory returned changed nothing,
    and the subscription it then posted was refused for want of the very key it set."""
    app = make_app()
    app.config.update(PUSH_ALLOW_HTTP_ENDPOINTS=True, PUSH_QUEUE="inline")
    with caplog.at_level("WARNING", logger="flask_push"):
        app.test_client().get("/push/vapid-public-key")
        app.test_client().get("/push/vapid-public-key")
    said = [r.getMessage() for r in caplog.records if "after push.init_app" in r.getMessage()]
    assert len(said) == 1, said
    assert "PUSH_ALLOW_HTTP_ENDPOINTS, PUSH_QUEUE changed after push.init_app(app)" in said[0]
    assert "Set them before init_app" in said[0]


def test_debug_turned_on_after_init_app_says_the_apns_environment_stays(make_app, caplog):
    """``app.run(debug=True)`` sets app.debug after the factory's init_app, which
    had read it as False for PUSH_APNS_SANDBOX, unset: a development build's tokens
    went to production APNs, whose BadDeviceToken marked each of those phones dead,
    and nothing said why. It is said, once; a PUSH_APNS_SANDBOX set says nothing."""
    app = make_app(**apns_config())
    assert app.extensions["push"].settings.providers["apns"]["sandbox"] is False
    app.debug = True
    with caplog.at_level("WARNING", logger="flask_push"):
        app.test_client().get("/push/vapid-public-key")
        app.test_client().get("/push/vapid-public-key")
    said = [r.getMessage() for r in caplog.records if "app.debug became" in r.getMessage()]
    assert said == [
        "flask-push: app.debug became True after push.init_app(app), which read it as False "
        "for PUSH_APNS_SANDBOX, unset: flask-push goes on with False. Set PUSH_APNS_SANDBOX "
        "(True for the development builds of your app, False for those of the App Store "
        "and TestFlight)."
    ]
    caplog.clear()
    chosen = make_app(**apns_config(PUSH_APNS_SANDBOX=False))
    chosen.debug = True
    with caplog.at_level("WARNING", logger="flask_push"):
        chosen.test_client().get("/push/vapid-public-key")
    assert "app.debug became" not in caplog.text


def test_a_key_changed_after_init_app_is_said_by_the_python_api(make_app, caplog):
    from conftest import push

    app = make_app(PUSH_QUEUE="inline")
    del app.config["PUSH_QUEUE"]
    with caplog.at_level("WARNING", logger="flask_push"), app.app_context():
        push.send(users=["alice"], title="Hi")
    assert any("PUSH_QUEUE changed after push.init_app" in r.getMessage() for r in caplog.records)


def test_unchanged_config_says_nothing(make_app, caplog):
    app = make_app(PUSH_QUEUE="inline")
    with caplog.at_level("WARNING", logger="flask_push"):
        app.test_client().get("/push/vapid-public-key")
    assert not [r for r in caplog.records if "after push.init_app" in r.getMessage()]


def test_a_key_changed_in_place_after_init_app_is_said(make_app, caplog):
    """A test that adds a category to the app's PUSH_CATEGORIES, or a host to its
    PUSH_ENDPOINT_HOSTS, changes the value init_app read, not the key: it is said as
    a key set anew is. Before, the value read and the value now were one object."""
    app = make_app(
        PUSH_CATEGORIES={"order_status": {"label": "Order updates"}},
        PUSH_ENDPOINT_HOSTS=["push.example.com"],
        PUSH_QUEUE="inline",
    )
    app.config["PUSH_CATEGORIES"]["promotions"] = {"label": "Offers"}
    app.config["PUSH_ENDPOINT_HOSTS"].append("127.0.0.1")
    with caplog.at_level("WARNING", logger="flask_push"):
        app.test_client().get("/push/vapid-public-key")
    said = [r.getMessage() for r in caplog.records if "after push.init_app" in r.getMessage()]
    assert len(said) == 1, said
    assert "PUSH_CATEGORIES, PUSH_ENDPOINT_HOSTS changed after push.init_app(app)" in said[0]
