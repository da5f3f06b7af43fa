"""Feeds carry a description and tags (registration, upload, PATCH); their jobs inherit
them: GET /feeds and GET /jobs filter by ?tag= (any, or every with tags_match=all)."""

from __future__ import annotations

from tests.integration.conftest import upload_feed

FEED = b"sku,name,price,currency\nA-1,Cap,1.00,EUR\n"


async def test_tags_are_set_listed_inherited_and_patched(client, acme, globex):
    a = await upload_feed(client, acme, FEED, "?tags=shoes,eu&description=Spring%20range")
    b = await upload_feed(client, acme, FEED, "?tags=shoes,us")
    c = await upload_feed(client, acme, FEED)
    await upload_feed(client, globex, FEED, "?tags=shoes")  # another tenant's
    feed = await (await client.get(f"/feeds/{a['feed_id']}", headers=acme)).json()
    assert feed["tags"] == ["eu", "shoes"] and feed["description"] == "Spring range"

    async def feeds(query: str) -> set[str]:
        resp = await client.get(f"/feeds{query}", headers=acme)
        assert resp.status == 200, await resp.text()
        return {f["feed_id"] for f in (await resp.json())["feeds"]}

    assert await feeds("?tag=shoes") == {a["feed_id"], b["feed_id"]}
    assert await feeds("?tag=eu&tag=us") == {a["feed_id"], b["feed_id"]}
    assert await feeds("?tag=eu&tag=shoes&tags_match=all") == {a["feed_id"]}
    assert await feeds("?tag=none") == set()

    async def jobs(query: str) -> set[str]:
        resp = await client.get(f"/jobs{query}", headers=acme)
        assert resp.status == 200, await resp.text()
        return {j["feed_id"] for j in (await resp.json())["jobs"]}

    assert await jobs("?tag=us") == {b["feed_id"]}
    assert await jobs("?tag=shoes&tag=eu&tags_match=all&job_type=validation") == {a["feed_id"]}

    resp = await client.patch(
        f"/feeds/{c['feed_id']}",
        json={"name": "autumn", "tags": ["us", "us", "coats"], "description": None},
        headers=acme,
    )
    assert resp.status == 200, await resp.text()
    patched = await resp.json()
    assert (patched["name"], patched["tags"], patched["description"]) == (
        "autumn",
        ["coats", "us"],
        None,
    )
    assert await jobs("?tag=us") == {b["feed_id"], c["feed_id"]}
    unchanged = await client.patch(f"/feeds/{c['feed_id']}", json={}, headers=acme)
    assert (await unchanged.json())["tags"] == ["coats", "us"]


async def test_bad_tags_are_400s_naming_the_field(client, acme, globex):
    ids = await upload_feed(client, acme, FEED)
    url = f"/feeds/{ids['feed_id']}"
    for body, field in [
        ({"tags": ["has space"]}, "tags"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
        ({"description": "d" * 2001}, "description"),
    ]:
        resp = await client.patch(url, json=body, headers=acme)
        assert resp.status == 400, body
        assert (await resp.json())["details"]["field"].startswith(field), body
    for query in ("?tag=has%20space", "?tags_match=some"):
        for route in ("/feeds", "/jobs"):
            assert (await client.get(route + query, headers=acme)).status == 400, (route, query)
    bad = await client.post(
        "/feeds?tags=a,b%20c", data=FEED, headers={**acme, "Content-Type": "text/csv"}
    )
    assert bad.status == 400 and (await bad.json())["details"]["field"] == "tags"
    assert (await client.patch(url, json={"tags": []}, headers=globex)).status == 404
