"""bentos.serving.middleware in process, on a minimal ASGI app (the served behaviour is checked over
HTTP in test_service.py)."""

from __future__ import annotations

import asyncio

import pytest

from bentos.serving.middleware import SpreadConnections


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _respond(mw: SpreadConnections, scope_type: str = "http") -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(mw({"type": scope_type}, None, send))
    return sent


def test_every_nth_response_asks_the_client_to_close():
    mw = SpreadConnections(_app, every=3)
    closing = []
    for n in range(1, 10):
        start, body = _respond(mw)
        assert (b"x-a", b"1") in start["headers"] and body["body"] == b"ok"
        if (b"connection", b"close") in start["headers"]:
            closing.append(n)
    assert closing == [3, 6, 9]


def test_other_scopes_pass_through_uncounted():
    mw = SpreadConnections(_app, every=1)
    start, _ = _respond(mw, "websocket")
    assert (b"connection", b"close") not in start["headers"]
    start, _ = _respond(mw)
    assert (b"connection", b"close") in start["headers"]


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        SpreadConnections(_app, every=0)


def test_a_plain_text_500_becomes_json():
    import asyncio

    from bentos.serving.middleware import JsonErrors

    async def broken(scope, receive, send):
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": b"Internal Server Error"})

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/boom", "headers": []}
    asyncio.run(JsonErrors(broken)(scope, receive, send))
    assert sent[0]["status"] == 500
    assert dict(sent[0]["headers"])[b"content-type"] == b"application/json"
    assert b'"error":"internal error (logged): GET ' in sent[1]["body"]


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/models/rf/report", "/models/{name}/report"),
        ("/models/rf/report/", "/models/{name}/report/{file}"),
        ("/models/rf/report/roc.png", "/models/{name}/report/{file}"),
        ("/models/rf/report/../model.yaml", "/models/{name}/report/{file}"),
        ("/models/rf/report/a\nb", "/models/{name}/report/{file}"),
        ("/models/rf/reports", "unmatched"),
        ("/models/rf", "unmatched"),
        ("/models/a/b/report", "unmatched"),
    ],
)
def test_report_paths_are_labelled_by_their_route_template(path, template):
    from bentos.serving.middleware import route_of

    label, ours = route_of(path)
    assert label == template
    assert ours == (template != "unmatched")
