"""One gRPC call's way through a worker of the gRPC server (bentos.serving.grpc): its message read
within a deadline, a slot for the work, the error family mapped to status codes once, and the
call counted and timed.

Why a call reads its own message: grpc's servers count a call from its headers (their
`maximum_concurrent_rpcs`), and the synchronous server holds a thread of its pool while the
message arrives, so clients that sent headers and part of a message held the whole capacity
(docs/reliability.md, "Slow and vanishing clients"). Here each one-message method is registered
as a client-streaming one: the handler starts on the event loop at the headers, reads the one
message itself within BENTOS_GRPC_MESSAGE_TIMEOUT_SECONDS, and only then takes one of
BENTOS_MAX_CONCURRENCY slots, as the HTTP door's middleware (Front) does. A call still waiting for its
message costs a coroutine, not a thread. On the wire a unary call and a client stream of one
message are the same, so clients see no difference.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bentos.errors import ClientError
from bentos.serving.metrics import Metrics
from bentos.settings import GrpcSettings

log = logging.getLogger("bentos.serving.grpc")
Method = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

# The error family (bentos.errors.ClientError) to gRPC status codes, once.
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
CLIENT_GONE = 499  # counted under the HTTP door's code: the client left before its answer


class Calls:
    """The calls of one worker, as `settings` bound them: a call's message must arrive within
    the message timeout, and of the calls waiting for theirs at most `max_waiting_calls` are
    kept (past it the one that has waited longest is dropped, so that a flood of held calls
    costs bounded memory and fresh calls still get in); at most the service's
    `max_concurrency` are worked on at once (past it, RESOURCE_EXHAUSTED at once). Each call
    is counted in `metrics` under its method's name."""

    def __init__(self, settings: GrpcSettings, metrics: Metrics | None):
        self.message_timeout = settings.message_timeout_seconds
        self.max_waiting = settings.max_waiting_calls
        self.max_concurrency = settings.serving.max_concurrency
        self.metrics = metrics
        # Read and written on the worker's one event loop only.
        self.in_flight = 0  # calls worked on
        self.open = 0  # calls begun and not ended: reading their message, waiting or worked on
        self._waiting: dict[asyncio.Task, None] = {}  # oldest first (dicts keep their order)
        self._dropped: set[asyncio.Task] = set()

    def register(self, server: grpc.aio.Server, add: Callable, servicer: Any, *, admit: bool):
        """`add(servicer, server)`, a generated `add_*Servicer_to_server`, with each of the
        servicer's one-message methods going through `call`; methods it leaves to its generated
        base class are not registered, and gRPC answers them UNIMPLEMENTED. `admit`: the calls
        take slots (the inference service); health checks do not, so that probes answer while
        the worker is busy."""
        kept = _Kept()
        add(servicer, kept)
        for service, handlers in kept.services.items():
            ours = {}
            for name, handler in handlers.items():
                if handler.request_streaming or handler.response_streaming:
                    fn = handler.stream_stream or handler.unary_stream
                    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
                        ours[name] = handler  # a stream (health's Watch): as it is
                    continue
                if not inspect.iscoroutinefunction(handler.unary_unary):
                    continue  # the generated base class's stub
                ours[name] = grpc.stream_unary_rpc_method_handler(
                    self._call(name, handler.unary_unary, admit),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, ours),))
            server.add_registered_method_handlers(service, ours)

    def _call(self, name: str, method: Method, admit: bool) -> Callable:
        async def call(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            task = asyncio.current_task()
            status = 200
            request = None
            self.open += 1
            try:
                request = await self._message(requests, context)
                if not admit:
                    return await method(request, context)
                if self.in_flight >= self.max_concurrency:
                    raise ClientError(
                        429,
                        f"more than {self.max_concurrency} calls in flight; retry later",
                    )
                self.in_flight += 1
                try:
                    return await method(request, context)
                finally:
                    self.in_flight -= 1
            except ClientError as exc:
                status = exc.status
                # abort() raises: the call ends here with this status and message.
                await context.abort(
                    CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message
                )
            except grpc.aio.AbortError:
                raise  # the method ended the call itself
            except Exception:
                status = 500
                request_id = dict(context.invocation_metadata() or ()).get("x-request-id")
                request_id = request_id or uuid.uuid4().hex
                log.exception(
                    "%s failed",
                    name,
                    extra={
                        "event": "request_failed",
                        "request_id": request_id,
                        "model": getattr(request, "model_name", None) or None,
                    },
                )
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"internal error (request id {request_id}); it is logged on the server",
                )
            finally:
                if task.cancelling():
                    # The client went away (it cancelled, or its connection closed): grpc
                    # cancels the call's task wherever it waits, work not yet started is
                    # skipped (bentos.serving.batching), and nothing is sent.
                    status = CLIENT_GONE
                    log.debug("%s: the client went away", name)
                self.open -= 1
                if self.metrics is not None:
                    self.metrics.observe("grpc", name, status, time.perf_counter() - t0)

        call.__name__ = name
        return call

    async def ended(self, timeout: float) -> None:
        """Wait until every call begun has ended, at most `timeout` seconds (a call waiting for
        its message ends at the message timeout)."""
        deadline = time.monotonic() + timeout
        while self.open and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _message(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        """The call's one message, which must arrive within the timeout (else a 408)."""
        task = asyncio.current_task()
        if len(self._waiting) >= self.max_waiting:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self._dropped.add(oldest)
            oldest.cancel()
        self._waiting[task] = None
        try:
            async with asyncio.timeout(self.message_timeout):
                return await anext(requests)
        except TimeoutError:
            raise ClientError(
                408, f"the request message did not arrive within {self.message_timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            if task not in self._dropped:
                raise  # the client went away
            self._dropped.discard(task)
            task.uncancel()
            raise ClientError(
                408,
                f"the request message did not arrive in time: {self.max_waiting} calls were "
                "waiting for theirs, and this one had waited longest",
            ) from None
        except StopAsyncIteration:
            # The stream ended without a message: a client that half-closed it, or one whose
            # connection closed. grpc tells the call of the latter a moment after the end of
            # the stream, by cancelling its task (here, in this pause): that is not an error.
            await asyncio.sleep(0.05)
            raise ClientError(400, "the call ended without its request message") from None
        finally:
            self._waiting.pop(task, None)


class _Kept:
    """Stands in for the server in a generated `add_*Servicer_to_server`, keeping its
    handlers: the generated code registers each service both ways, so one is enough."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.services[service] = handlers
