import importlib.metadata


async def test_healthz_answers_ok_with_the_version(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    version = importlib.metadata.version("feedjobs")
    assert await resp.json() == {"status": "ok", "version": version}


async def test_a_wrong_method_says_which_are_allowed(client, acme):
    resp = await client.delete("/jobs/JV00001/run", headers=acme)
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    body = await resp.json()
    assert body["error_code"] == "METHOD_NOT_ALLOWED" and body["details"] == {"allowed": ["POST"]}


async def test_a_missing_field_is_named(client, acme):
    resp = await client.post("/feeds", json={"name": "x"}, headers=acme)
    assert resp.status == 400
    body = await resp.json()
    assert body["details"] == {"field": "s3_uri"} and "s3_uri" in body["message"]
    resp = await client.post("/jobs/JV00001/run", json={"mode": 5}, headers=acme)
    assert (await resp.json())["details"] == {"field": "mode"}
