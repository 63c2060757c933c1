"""serve's bearer token: every route but /healthz needs it; 401 without, 403 when wrong."""

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from streams.dashboard import Scraper
from streams.serve import make_app

from .test_serve import drive, ready_replica, some_events, tiny_items

TOKEN = "s3cret-token-of-the-shop"
ROUTES = ["/v1/users/u-1/recommendations", "/v1/items/sku-001/similar", "/readyz", "/openapi.json", "/metrics",
          "/v2/nothing"]


def test_every_route_but_healthz_needs_the_token():
    items = tiny_items()
    states, _ = drive(items, some_events())
    replica = ready_replica(items, states)

    async def run() -> None:
        async with TestClient(TestServer(make_app(replica, token=TOKEN))) as client:
            assert (await client.get("/healthz")).status == 200
            for path in ROUTES:
                for header in (None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", TOKEN):
                    response = await client.get(path, headers={"Authorization": header} if header else {})
                    body = await response.json()
                    assert (response.status, body["error"]) == (401, "unauthorized"), (path, header)
                    assert response.headers["WWW-Authenticate"].startswith("Bearer") and body["detail"]
                for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"):
                    response = await client.get(path, headers={"Authorization": wrong})
                    body = await response.json()
                    assert (response.status, body["error"]) == (403, "forbidden"), (path, wrong)
                    assert TOKEN not in await response.text()
            for scheme in ("Bearer", "bearer"):
                assert (await client.get(ROUTES[0], headers={"Authorization": f"{scheme} {TOKEN}"})).status == 200
            assert (await client.get("/v2/nothing", headers={"Authorization": f"Bearer {TOKEN}"})).status == 404
        async with TestClient(TestServer(make_app(replica))) as open_client:  # no token set: no check
            assert (await open_client.get(ROUTES[0])).status == 200

    asyncio.run(run())


def test_the_dashboard_scraper_sends_the_token_to_serve_metrics():
    items = tiny_items()
    replica = ready_replica(items, drive(items, some_events())[0])

    async def run() -> None:
        async with TestServer(make_app(replica, token=TOKEN)) as server:
            url = str(server.make_url("/metrics"))
            for token, up in ((TOKEN, True), (None, False), ("wrong", False)):
                scraper = Scraper([url], token=token)
                async with scraper.session() as session:
                    await scraper.scrape_once(session)
                assert scraper.targets[0].up is up, (token, scraper.targets[0].error)

    asyncio.run(run())
