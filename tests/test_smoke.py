from conftest import as_user


def test_vapid_key_and_subscribe(client, make_subscription):
    assert client.get("/push/vapid-public-key").status_code == 200
    r = client.post("/push/subscriptions", json=make_subscription(), headers=as_user("alice"))
    assert r.status_code == 201, r.json
