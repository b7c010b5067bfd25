"""The OpenAI-compatible HTTP API and the chat page, on FastAPI.

    GET  /                      the chat page (page.html: one file, no build step)
    GET  /health                liveness and load; 503 when the engine thread is gone
    GET  /ready                 readiness: 503 until the decoding step is prepared (compiled, captured)
    GET  /metrics               Prometheus text format
    GET  /info                  the served model, its limits and its release (evaluation figures)
    GET  /v1/models[/{id}]      the one served model; another id is 404
    POST /v1/completions        text completion
    POST /v1/chat/completions   chat, with the one template in tenali_model.chat

Both POST routes stream server-sent events when ``stream`` is true (``data: {chunk}`` lines, then
``data: [DONE]``) and take max_tokens, temperature, top_p, top_k, frequency_penalty,
presence_penalty, stop (a string or a list), seed, and two extensions: ``stop_token_ids`` (ids
that end the answer besides the defaults) and ``truncate_prompt`` (cut the prompt from the left
to fit the context instead of answering 400). Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 422 for malformed JSON or fields (naming
the field), 400 for a prompt that does not fit (naming the limit), 404 for an unknown model, 429
with Retry-After when the queue is full, 401 without the API key when one is set, 503 while the
engine is stopped. A temperature below 1e-5 is greedy, as in vLLM (`generate.GREEDY_BELOW`).

A client that disconnects cancels its generation (its slot is freed at the next step); every
request has a time limit (``finish_reason`` "length" when it strikes mid-answer, 503 when it
strikes before the first token, streamed or not: a stream's headers wait for its first token, so
a request that fails before it gets the status and error body a whole answer would). A stream cut
by the server shutting down ends with an error chunk before ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..chat import ChatFormatError, prompt_ids, stop_ids
from ..tokenizer import EOT, SPECIAL_TOKENS
from .engine import Engine, EngineStopped, Event, QueueFull, SamplingParams
from .loading import Served
from .metrics import Metrics
from .text import TextStream

log = logging.getLogger("tenali.serve")
PAGE = Path(__file__).with_name("page.html")
API_KEY_ENV = "TENALI_API_KEY"
_UNION_TAG = re.compile(r"[\[\]\-]|^(str|int|float|bool|list|dict|none|ContentPart)$")


@dataclass
class ServeOptions:
    max_batch: int = 16
    max_queue: int = 64
    request_timeout: float = 300.0
    cors_origins: list[str] = field(default_factory=list)
    # None: read TENALI_API_KEY from the environment; "" means no key.
    api_key: str | None = None
    # Seconds: after a streamed chunk, the next waits until this much time has passed (or the answer
    # ends) and carries every token made meanwhile. Each chunk costs the server Python time that the
    # decoding thread waits for (the GIL), so a fast model streams faster with fewer, fuller chunks;
    # 0 sends each token as soon as the event loop gets to it. The first token is never held.
    stream_interval: float = 0.02
    # Requests admitted together are right-padded into shared prefills while the padding stays within
    # this share of their tokens (Engine's prefill_padding; 0: only prompts of one length share one).
    prefill_padding: float = 0.25
    # Decode through one static step replayed from a CUDA graph (Engine's cuda_graph; CUDA only).
    cuda_graph: bool = False
    # With cuda_graph: compile that step with torch.compile before capturing it (Engine's compile_step).
    compile_step: bool = False


# --- request bodies ------------------------------------------------------------------------------

def _whole_characters(text: str) -> str:
    """JSON may carry a lone UTF-16 surrogate ("\\ud83d", half an emoji a client cut in two), which no
    UTF-8 text holds: the tokenizer failed on it and the client got a bare 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"holds a lone UTF-16 surrogate ({text[e.start]!r} at character {e.start}), which is not "
                         "a character: send whole characters (both halves of a surrogate pair)") from None
    return text


Text = Annotated[str, AfterValidator(_whole_characters)]


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    # NaN (Python's JSON reads it) failed "temperature <= 2" and was refused as too large
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    frequency_penalty: float | None = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(0.0, ge=-2.0, le=2.0)
    stop: Text | list[Text] | None = None
    stop_token_ids: list[int] | None = None
    # torch.Generator.manual_seed takes int64 and uint64 values; others would fail in the engine (500)
    seed: int | None = Field(None, ge=-2**63, le=2**64 - 1)
    # OpenAI takes null for every optional field (as its default): typed clients send "n": null
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1, le=1, description="only one choice per request")
    user: str | None = None
    truncate_prompt: bool = Field(False, description="cut the prompt from the left to fit the context")

    def refuse_unsupported(self) -> None:
        """Options that would change the answer's content or shape are refused (400), not silently
        ignored: a client asking for them would otherwise get a wrong answer that looks right."""
        for name, wanted in self._unsupported():
            if wanted:
                raise APIError(400, f"{name}: not supported by this server", param=name, code="unsupported_parameter")

    logit_bias: dict[str, float] | None = None

    def _unsupported(self) -> list[tuple[str, bool]]:
        return [("logit_bias", bool(self.logit_bias))]

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 16:
            raise _invalid("stop", "at most 16 stop strings")
        return stops


class CompletionRequest(_Sampling):
    prompt: Text | list[int] | list[Text]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool | None = None
    logprobs: int | bool | None = None  # false: none asked for (0 asks for the sampled token's)
    best_of: int | None = None
    suffix: str | None = None

    def _unsupported(self) -> list[tuple[str, bool]]:
        return [*super()._unsupported(), ("echo", bool(self.echo)),
                ("logprobs", self.logprobs is not None and self.logprobs is not False),
                ("best_of", (self.best_of or 1) > 1), ("suffix", bool(self.suffix))]


class ContentPart(BaseModel):
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: Text | list[ContentPart]


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = None
    response_format: dict | None = None
    tool_choice: str | dict | None = None
    function_call: str | dict | None = None  # the deprecated form of tool_choice
    modalities: list[str] | None = None
    audio: dict | None = None

    def _unsupported(self) -> list[tuple[str, bool]]:
        # JSON modes and forced tool calls promise a shape plain generation cannot keep; "auto" tools
        # may be answered in text, as a model that chose not to call one would. An audio answer would
        # come back without its audio.
        return [*super()._unsupported(), ("logprobs", bool(self.logprobs)),
                ("response_format", (self.response_format or {}).get("type", "text") != "text"),
                ("tool_choice", self.tool_choice not in (None, "auto", "none")),
                ("function_call", self.function_call not in (None, "auto", "none")),
                ("modalities", any(m != "text" for m in self.modalities or ())),
                ("audio", self.audio is not None)]


# --- errors --------------------------------------------------------------------------------------

class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error",
                 headers: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.headers, self.code = status, message, param, type_, headers, code


def _invalid(param: str, message: str) -> APIError:
    return APIError(422, f"{param}: {message}", param=param)


def _error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --- the app -------------------------------------------------------------------------------------


def _json_safe(value):
    """value with NaN and infinities as None: a release's figures may hold them (an evaluation that
    skipped a domain), and JSON has no such numbers, so /info answered 500 and the page showed nothing."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def create_app(served: Served, options: ServeOptions | None = None, engine: Engine | None = None) -> FastAPI:
    """The FastAPI app; the engine starts with the app and stops with it."""
    options = options or ServeOptions()
    metrics = Metrics()
    api_key = os.environ.get(API_KEY_ENV, "") if options.api_key is None else options.api_key
    tok = served.tokenizer
    own_engine = engine is None
    engine = engine or Engine(served.model, max_batch=options.max_batch, max_queue=options.max_queue,
                              request_timeout=options.request_timeout, metrics=metrics,
                              vocab_limit=tok.vocab_size, prefill_padding=options.prefill_padding,
                              cuda_graph=options.cuda_graph, compile_step=options.compile_step)
    if engine.metrics is None:
        engine.metrics = metrics
    eot = tok.token_id(EOT)
    # The model's own end of text (an imported base's "</s>", from its config.json) ends an answer too.
    vocab = served.model.config.vocab_size
    ends = list(dict.fromkeys(([eot] if eot is not None else []) + [i for i in served.eos_ids if 0 <= i < vocab]))
    chat_stops = list(dict.fromkeys(stop_ids(tok) + ends)) if eot is not None else ends
    # never shown as text (vLLM's skip_special_tokens): the chat markers, pad, and the model's own ends
    special = {i for i in (tok.token_id(t) for t in SPECIAL_TOKENS) if i is not None} | set(ends)
    started = time.time()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        # The engine thread and the event loop share the GIL; Python's default 5 ms switch interval
        # would make each streamed token wait for the other thread's slice. 1 ms keeps latency low.
        import sys

        if sys.getswitchinterval() > 0.001:
            sys.setswitchinterval(0.001)
        engine.start()
        log.info("serving %s from %s (%d slots, queue %d)", served.name, served.source,
                 engine.max_batch, engine.max_queue)
        try:
            yield
        finally:
            if own_engine:
                engine.stop()

    app = FastAPI(title="Tenali", version="1", lifespan=lifespan,
                  description="An OpenAI-compatible API for a Tenali model, with a chat page at /.")
    app.state.engine, app.state.metrics, app.state.served = engine, metrics, served

    if options.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # Any request header from the allowed origins (the origin list is the gate, as vLLM's default
        # --allowed-headers '*'): X-API-Key, which check_key takes, and the OpenAI JS SDK's x-stainless-*
        # headers, whose set grows with its versions (x-stainless-retry-count, -timeout, ...).
        app.add_middleware(CORSMiddleware, allow_origins=options.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    app.add_middleware(_CountRequests, metrics=metrics)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(_error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        # a field of several types (stop: a string or a list) fails once per type, the type the client
        # did not send first ("Input should be a valid string" for a list): the deepest error of that
        # field is about what was sent, and of those one our validators raised about its value
        field_errors = [e for e in errors if tuple(e.get("loc", ()))[:2] == tuple(first.get("loc", ()))[:2]]
        first = max(field_errors, key=lambda e: (len(e.get("loc", ())), e.get("type") == "value_error"),
                    default=first)
        # pydantic adds union members ("str", "list[str]") to the location: keep only field names and indexes
        loc = [str(x) for x in first.get("loc", ()) if x != "body" and not _UNION_TAG.search(str(x))]
        param = ".".join(loc) or "body"
        if first.get("type") == "json_invalid":
            param, msg = "body", f"malformed JSON ({first.get('ctx', {}).get('error', 'decode error')})"
        else:
            msg = first.get("msg", "invalid")
        body = _error_body(f"{param}: {msg}", "invalid_request_error", param)
        body["detail"] = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
        return JSONResponse(body, status_code=422)

    # starlette's class, which FastAPI's subclasses: the router's own 404 and 405 raise starlette's
    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return JSONResponse(_error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def check_key(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise APIError(401, f"missing or wrong API key: send 'Authorization: Bearer <key>' "
                                f"(the server reads it from {API_KEY_ENV})", type_="authentication_error")

    def model_card() -> dict:
        return {"id": served.name, "object": "model", "created": int(started), "owned_by": "tenali",
                "max_model_len": engine.max_len}

    def check_model(name: str | None) -> None:
        if name and name != served.name:
            raise APIError(404, f"model {name!r} is not served here; this server serves {served.name!r} "
                                "(GET /v1/models)", param="model", code="model_not_found")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    def status() -> str:
        if not engine.alive:
            return "engine stopped"
        return "ok" if engine.ready else engine.prepare_error or "starting"

    @app.get("/health")
    async def health():
        """Liveness: 200 while the engine's thread runs, also while it prepares its decoding step."""
        body = {"status": status(), "ready": engine.ready, "model": served.name,
                "active": engine.active, "queued": engine.queue_depth, "slots": engine.max_batch}
        return JSONResponse(body, status_code=200 if engine.alive else 503)

    @app.get("/ready")
    async def ready():
        """Readiness: 200 once the decoding step is prepared (with --cuda-graph --compile, compiling it
        happens after the port opens; requests sent meanwhile wait in the queue)."""
        return JSONResponse({"ready": engine.ready, "status": status()}, status_code=200 if engine.ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/info")
    async def info():
        cfg = served.model.config
        return {"model": served.name, "source": served.source, "context": engine.max_len,
                "parameters": served.model.num_params(), "vocab_size": cfg.vocab_size,
                "architecture": {"dim": cfg.dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                                 "n_kv_heads": cfg.n_kv_heads, "activation": cfg.activation},
                "slots": engine.max_batch, "queue": engine.max_queue, "auth": bool(api_key),
                "release": _json_safe(served.release)}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(check_key)])
    async def model(model_id: str):
        check_model(model_id)
        return model_card()

    def sampling(body: _Sampling, prompt: list[int], default_max: int | None, extra_stops: list[int]):
        limit = engine.max_len
        max_tokens = body.max_completion_tokens or body.max_tokens or default_max
        # name the fields this request used: a completion has no messages, chat may send max_completion_tokens
        prompt_param = "messages" if isinstance(body, ChatRequest) else "prompt"
        max_param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        if max_tokens is None:
            max_tokens = limit - len(prompt)
            if max_tokens < 1:
                if not body.truncate_prompt:
                    raise APIError(400, f"{prompt_param}: the prompt has {len(prompt)} tokens, the context holds "
                                        f"{limit}: shorten it or set truncate_prompt", param=prompt_param,
                                   code="context_length_exceeded")
                max_tokens = min(16, limit - 1)
        if max_tokens >= limit:
            raise APIError(400, f"{max_param} {max_tokens} must be below the context of {limit} tokens",
                           param=max_param, code="context_length_exceeded")
        if len(prompt) + max_tokens > limit:
            if body.truncate_prompt:
                prompt = prompt[len(prompt) + max_tokens - limit:]
            else:
                # the field to change: the prompt when it fills the context alone, else max_tokens
                param = prompt_param if len(prompt) >= limit else max_param
                raise APIError(400, f"{param}: the prompt ({len(prompt)} tokens) plus {max_param} ({max_tokens}) "
                                    f"exceeds the context of {limit} tokens: shorten the prompt, lower {max_param}, "
                                    "or set truncate_prompt to cut the prompt from the left",
                               param=param, code="context_length_exceeded")
        if not prompt:
            raise APIError(400, "prompt: empty; give at least one token", param="prompt")
        vocab = served.model.config.vocab_size
        for name, ids in (("prompt", prompt), ("stop_token_ids", body.stop_token_ids or [])):
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise APIError(400, f"{name}: token ids {bad[:5]} are outside the vocabulary 0..{vocab - 1}",
                               param=name)
        temperature = 1.0 if body.temperature is None else body.temperature
        params = SamplingParams(
            max_tokens=max_tokens, temperature=temperature,
            top_p=body.top_p if body.top_p not in (None, 1.0) else None,
            top_k=body.top_k if body.top_k and body.top_k > 0 else None,
            frequency_penalty=body.frequency_penalty or 0.0, presence_penalty=body.presence_penalty or 0.0,
            seed=body.seed, stop_token_ids=tuple(dict.fromkeys(extra_stops + list(body.stop_token_ids or []))))
        return prompt, params

    def submit(prompt: list[int], params: SamplingParams):
        try:
            req = engine.submit(prompt, params, loop=asyncio.get_running_loop())
        except QueueFull as e:
            metrics.rejected.inc()
            raise APIError(429, f"the server is busy: {e}; retry after {e.retry_after} s", type_="rate_limit_error",
                           headers={"Retry-After": str(e.retry_after)}, code="queue_full") from None
        except ValueError as e:
            raise APIError(400, str(e), param="prompt") from None
        except EngineStopped:
            raise APIError(503, "the server is not generating (its engine is stopped or shutting down): retry "
                                "after it restarts, or on another replica", type_="server_error",
                           code="engine_stopped") from None
        metrics.prompt_tokens.inc(len(prompt))
        return req

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        body.refuse_unsupported()
        if isinstance(body.prompt, list) and body.prompt and isinstance(body.prompt[0], str):
            if len(body.prompt) != 1:
                raise _invalid("prompt", "one prompt per request (a list of one string, a string, or token ids)")
            text_prompt = body.prompt[0]
        else:
            text_prompt = body.prompt
        ids = tok.encode(text_prompt) if isinstance(text_prompt, str) else list(text_prompt)
        prompt, params = sampling(body, ids, None, ends)
        return await respond(request, body, prompt, params, chat=False)

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(body: ChatRequest, request: Request):
        check_model(body.model)
        body.refuse_unsupported()
        messages = []
        for m in body.messages:
            content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
            messages.append({"role": "system" if m.role == "developer" else m.role, "content": content})
        try:
            ids = prompt_ids(tok, messages)
        except ChatFormatError as e:
            param = str(e).split(":", 1)[0]
            raise APIError(422, str(e), param=param) from None
        except ValueError as e:  # a tokenizer without the chat markers
            raise APIError(400, str(e), param="messages") from None
        prompt, params = sampling(body, ids, None, chat_stops)
        return await respond(request, body, prompt, params, chat=True)

    async def respond(request: Request, body: _Sampling, prompt: list[int], params: SamplingParams, chat: bool):
        stops = body.stops()
        req = submit(prompt, params)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        watcher = asyncio.create_task(_watch_disconnect(request, req))

        def usage(n_completion: int) -> dict:
            return {"prompt_tokens": len(prompt), "completion_tokens": n_completion,
                    "total_tokens": len(prompt) + n_completion}

        def close(label: str) -> None:
            if not req.done:
                req.cancel()
            watcher.cancel()
            metrics.finished.labels(label).inc()

        async def pieces(first: list[Event] | None = None):
            """(text delta, finish_reason or None, completion tokens so far, error); first: events
            already read."""
            # a completion continues its prompt: decoded after its last ids, its first space is kept
            text = TextStream(tok, stops, context=() if chat else prompt, skip=special)
            used = 0
            hold_until = None  # the first token goes out at once; later ones at most every stream_interval
            loop = asyncio.get_running_loop()
            try:
                while True:
                    # Every token that arrived meanwhile goes out in one chunk (see Request.next_events).
                    delta = ""
                    if first is not None:  # read before the headers went out
                        events, first = first, None
                    else:
                        events = await req.next_events(hold_until)
                    for ev in events:
                        if ev.kind == "token":
                            used += 1
                            delta += text.add(ev.token)
                            if text.stopped:
                                req.cancel()
                                yield delta, "stop", used, None
                                return
                            continue
                        used = len(req.generated)
                        reason = ev.finish_reason
                        yield delta + text.flush(), ("stop" if text.stopped or reason == "stop" else
                                                     "length" if reason in ("length", "time_limit") else reason), used, ev.error
                        return
                    if delta:
                        yield delta, None, used, None
                        if options.stream_interval > 0:
                            hold_until = loop.time() + options.stream_interval
            finally:
                # ended by the engine: its reason; cut by a stop string: "stop"; else the client left
                close(req.finish_reason or ("stop" if text.stopped else "cancelled"))

        if body.stream:
            # The headers wait for the first token: a request that ends without one (time limit,
            # error, shutdown) gets the status and body a whole answer would, not a 200 with nothing.
            try:
                first = await req.next_events()
            except BaseException:
                close("cancelled")
                raise
            done = next((ev for ev in first if ev.kind == "done"), None)
            if done is not None and not req.generated:
                close(req.finish_reason)
                raise await ended_without_answer(request, req, done.error)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(pieces(first), rid, created, served.name, chat, include_usage, usage, req),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        parts, reason, used, error = [], None, 0, None
        async for delta, fr, n, err in pieces():
            parts.append(delta)
            reason, used, error = fr or reason, n, err
        if reason in ("error", "cancelled") or (req.finish_reason == "time_limit" and not req.generated):
            raise await ended_without_answer(request, req, error)
        text = "".join(parts)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": reason}
            return {"id": rid, "object": "chat.completion", "created": created, "model": served.name,
                    "system_fingerprint": None, "choices": [choice], "usage": usage(used)}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {"id": rid, "object": "text_completion", "created": created, "model": served.name,
                "system_fingerprint": None, "choices": [choice], "usage": usage(used)}

    async def ended_without_answer(request: Request, req, error: str | None) -> APIError:
        """The error for a generation that failed, was cancelled, or ran out of time before its first
        token (the same for streamed and whole answers)."""
        if req.finish_reason == "error":
            return APIError(500, f"generation failed: {error}", type_="server_error")
        if req.finish_reason == "cancelled":
            return APIError(499 if await request.is_disconnected() else 503,
                            f"the generation was cancelled{f': {error}' if error else ''}", type_="server_error")
        return APIError(503, f"no slot became free within the time limit of {engine.request_timeout:g} s",
                        type_="server_error", headers={"Retry-After": str(engine.retry_after())})

    return app


async def _watch_disconnect(request: Request, req) -> None:
    """Cancel the generation when the client goes away (also while it still waits in the queue)."""
    try:
        while not req.done:
            if await request.is_disconnected():
                req.cancel()
                return
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        pass


async def _sse(pieces, rid: str, created: int, model: str, chat: bool, include_usage: bool, usage, req):
    import json

    def chunk(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    base = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "system_fingerprint": None}

    def choice(delta: str | None, finish: str | None, role: bool = False) -> dict:
        if chat:
            d = {"role": "assistant", "content": ""} if role else ({"content": delta} if delta else {})
            return {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}

    if chat:
        yield chunk({**base, "choices": [choice(None, None, role=True)]})
    used = 0
    async for delta, finish, n, error in pieces:
        used = n
        if delta:  # before an error chunk too: the text generated so far reaches the client
            yield chunk({**base, "choices": [choice(delta, None)]})
        if finish == "error":
            yield chunk(_error_body(f"generation failed: {error}", "server_error"))
            break
        if finish == "cancelled":  # the client left (nobody reads this) or the server is shutting down
            yield chunk(_error_body(f"the generation was cancelled{f': {error}' if error else ''}", "server_error"))
            break
        if finish:
            yield chunk({**base, "choices": [choice(None, finish)]})
    if include_usage:
        yield chunk({**base, "choices": [], "usage": usage(used)})
    yield "data: [DONE]\n\n"


class _CountRequests:
    """Pure ASGI middleware counting requests by route template and status (streaming-safe)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"
            self.metrics.requests.labels(path, str(status["code"])).inc()
