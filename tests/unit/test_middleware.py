"""bentos.serving.middleware in process, on a minimal ASGI app (the served behaviour is checked over
HTTP in test_service.py)."""

from __future__ import annotations

import asyncio
import time
import types

import pytest

from bentos.serving.app import Answer
from bentos.serving.middleware import Front


class _Ours:
    """What Front needs of this project's app: its state (no core, no metrics here)."""

    def __init__(self, app=None):
        self.app = app
        self.state = types.SimpleNamespace()

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _scope(method: str = "GET", path: str = "/livez") -> dict:
    return {"type": "http", "method": method, "path": path, "headers": []}


def _respond(mw: Front, scope: dict | None = None, receive=None, first: bool = False) -> list[dict]:
    """The messages `mw` sends (through `first`, as the protocol calls it, when asked)."""
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def body():
        return {"type": "http.request", "body": b"{}"}

    asyncio.run((mw.first if first else mw)(scope or _scope(), receive or body, send))
    return sent


def test_every_nth_response_asks_the_client_to_close():
    mw = Front(_app, ours=_Ours(), every=3)
    closing = []
    for n in range(1, 10):
        start, body = _respond(mw, _scope("POST" if n % 2 else "GET"))
        assert (b"x-a", b"1") in start["headers"] and body["body"] == b"ok"
        if (b"connection", b"close") in start["headers"]:
            closing.append(n)
    assert closing == [3, 6, 9]


def test_other_scopes_pass_through_uncounted():
    mw = Front(_app, ours=_Ours(), every=1)
    start, _ = _respond(mw, {"type": "websocket"})
    assert (b"connection", b"close") not in start["headers"]
    start, _ = _respond(mw)
    assert (b"connection", b"close") in start["headers"]


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        Front(_app, ours=_Ours(), every=0)


def test_a_plain_text_500_becomes_json():
    async def broken(scope, receive, send):
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": b"Internal Server Error"})

    sent = _respond(Front(broken, ours=_Ours()), _scope("GET", "/boom"))
    assert sent[0]["status"] == 500
    assert dict(sent[0]["headers"])[b"content-type"] == b"application/json"
    assert b'"error":"internal error (logged): GET ' in sent[1]["body"]


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_frees_its_wait():
    mw = Front(_app, ours=_Ours(), body_timeout=0.2)

    async def never():
        await asyncio.sleep(3600)

    t0 = time.perf_counter()
    start, body = _respond(mw, _scope("POST", "/predict"), never)
    assert start["status"] == 408 and b"did not arrive within 0.2 s" in body["body"]
    assert 0.2 <= time.perf_counter() - t0 < 1.0
    assert not len(mw._deadlines) and mw.in_flight == 0


def test_a_cancellation_that_is_not_the_deadline_goes_through():
    mw = Front(_app, ours=_Ours(), body_timeout=30)

    async def never():
        await asyncio.sleep(3600)

    async def go():
        task = asyncio.ensure_future(mw(_scope("POST", "/predict"), never, _discard))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert not len(mw._deadlines)


async def _discard(message):
    pass


def test_a_full_worker_answers_429_once_the_body_has_arrived():
    mw = Front(_app, ours=_Ours(), max_concurrency=1)
    mw.in_flight = 1
    start, body = _respond(mw, _scope("POST", "/predict"))
    assert start["status"] == 429 and b"more than 1 requests in flight" in body["body"]


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


def _hot_front(call) -> Front:
    ours = _Ours()
    ours.state.core = object()
    return Front(_app, ours=ours, hot={"/predict": call})


def _post(path: str = "/predict", content_type: bytes | None = b"application/json") -> dict:
    scope = _scope("POST", path)
    if content_type is not None:
        scope["headers"] = [(b"content-type", content_type)]
    return scope


def test_it_takes_only_json_posts_to_hot_routes_once_a_core_is_there():
    async def call(core, scope, body):
        raise AssertionError("not called")

    mw = _hot_front(call)
    core = mw.ours.state.core
    del mw.ours.state.core
    assert not mw.takes(_post())  # not loaded yet: BentoML's path answers
    mw.ours.state.core = core
    assert mw.takes(_post())
    assert mw.takes(_post(content_type=None))  # no content type: read as JSON, as curl -d sends
    assert not mw.takes(_post(content_type=b"application/octet-stream"))  # BentoML's clients
    assert not mw.takes(_scope("GET", "/predict"))
    assert not mw.takes(_post("/models"))
    assert not mw.takes(_post("/v2/models/rf/infer"))  # not among this front's hot routes


def test_a_request_served_first_that_does_not_answer_in_time_gets_a_504():
    cancelled = []

    async def slow(core, scope, body):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    mw = _hot_front(slow)
    mw.request_timeout = 0.3
    t0 = time.perf_counter()
    sent = _respond(mw, _post(), first=True)
    assert sent[0]["status"] == 504 and b"not answered within 0.3 s" in sent[1]["body"]
    assert 0.3 <= time.perf_counter() - t0 < 1.0
    assert cancelled == [True] and not len(mw._deadlines) and mw.in_flight == 0


def test_a_request_served_first_gets_its_answer_within_the_timeout():
    async def quick(core, scope, body):
        return Answer(200, b'{"ok":true}', [(b"content-type", b"application/json")])

    mw = _hot_front(quick)
    mw.request_timeout = 5
    sent = _respond(mw, _post(), first=True)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"ok":true}'
    assert (b"content-length", b"11") in sent[0]["headers"]


def test_body_deadlines_hold_on_every_event_loop_a_front_meets():
    mw = Front(_app, ours=_Ours(), body_timeout=0.2)

    async def never():  # in time for no deadline but a second's: a 200 if none held
        await asyncio.sleep(1)
        return {"type": "http.request", "body": b"{}"}

    for _ in range(2):  # asyncio.run: a new loop each time, as tests and benchmarks make
        start, _ = _respond(mw, _scope("POST", "/predict"), never)
        assert start["status"] == 408
