"""The sim-server's batch APIs: OpenAI Files + Batches and Anthropic Message Batches.

Registered on the :class:`~chainfleet.sim.server.SimServer` app next to the one-call routes, with
the same keys, models, text and token counts (a request answered in a batch gets the text it
would get online). A job takes ``delay`` seconds from its creation to its end; then each of its
requests, in turn, is

- answered as a ``[[sim:NNN]]`` trigger or an exhausted ``quota_tokens`` say (errored);
- errored (a 500) with probability ``error_rate``, expired with probability ``expire_rate``
  (one draw per request and submission of that ``custom_id``, so it is the same from run to run);
- else answered.

A whole job fails (OpenAI ``status: failed``; Anthropic: every request ``errored``) with
probability ``fail_rate``, drawn per job. An OpenAI job with an expired request ends
``expired``, its answered requests in the output file and the others in the error file (code
``batch_expired``), as OpenAI does.

Routes: ``POST /v1/files``, ``GET /v1/files/{id}/content``, ``POST|GET /v1/batches``,
``GET /v1/batches/{id}``, ``POST|GET /v1/messages/batches``, ``GET /v1/messages/batches/{id}``,
``GET /v1/messages/batches/{id}/results``; ``GET /sim/batch/stats`` (what tests count: jobs
created, requests submitted, the most times one ``custom_id`` was submitted, outcomes),
``POST /sim/batch/config``, ``POST /sim/batch/reset`` (the server mounts these three with its
own, :func:`~chainfleet.sim.admin.add_admin_routes`). With ``enabled: false`` the batch routes
answer 404, like an OpenAI-compatible server that has no batch API.

The jobs reach the server through a :class:`Host`, never the reverse: its settings, its counts
(a batch answer counts and spends the quota like an online one) and the model's reply.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainfleet.sim.call import Call, Failure, Reply
from chainfleet.sim.faults import check_quota, prompt_trigger, status_failure
from chainfleet.sim.settings import SimServerSettings
from chainfleet.sim.stats import Stats
from chainfleet.sim.wire import Anthropic, Dialect, OpenAI, read_json

__all__ = ["BatchSim", "BatchSimSettings", "Host"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Host(Protocol):
    """What batch jobs share with the server they run on (:class:`~chainfleet.sim.server.SimServer`).

    Its settings (keys, models, seed, quota), its counts (a batch answer is counted like an
    online one, and spends the same quota) and the model's answer to a call (the same text or tool calls).
    """

    @property
    def settings(self) -> SimServerSettings: ...

    @property
    def counts(self) -> Stats: ...

    def respond(self, call: Call) -> Reply: ...


class BatchSimSettings(BaseModel):
    """How the sim-server's batch jobs behave (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    delay: float = Field(0.5, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    expire_rate: float = Field(0.0, ge=0, le=1)
    fail_rate: float = Field(0.0, ge=0, le=1)

    def public(self) -> dict[str, Any]:
        """The settings as JSON (what ``POST /sim/batch/config`` answers)."""
        return self.model_dump(mode="json")


def _unit(*parts: object) -> float:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Job:
    """One batch job: its requests (custom_id, body), when it was made, its outcome once ended."""

    id: str
    api: str  # "openai" | "anthropic"
    requests: list[tuple[str, Any]]
    created: float
    wall: float
    fails: bool
    input_file_id: str | None = None
    metadata: Any = None
    results: list[tuple[str, str, Any]] | None = None  # (custom_id, state, body or error)
    ended_wall: float | None = None
    files: dict[str, str | None] = field(default_factory=dict)


class _Counts:
    def __init__(self) -> None:
        self.jobs = 0
        self.files = 0
        self.requests = 0
        self.failed_jobs = 0
        self.submissions: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()


class BatchSim:
    """The batch jobs of one server, its ``host`` (state on this object, read by ``/sim/batch/stats``)."""

    def __init__(self, host: Host, settings: BatchSimSettings | None = None) -> None:
        self._host = host
        self.settings = settings or BatchSimSettings()
        self._files: dict[str, bytes] = {}
        self._jobs: dict[str, _Job] = {}
        self._numbers = itertools.count(1)
        self._counts = _Counts()

    # -- admin ---------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> BatchSimSettings:
        """Replace some settings (validated; pydantic's ``ValidationError`` on a bad one)."""
        self.settings = BatchSimSettings.model_validate({**self.settings.model_dump(), **changes})
        return self.settings

    def stats(self) -> dict[str, Any]:
        """Counts since the start or the last reset (the ``GET /sim/batch/stats`` body)."""
        c = self._counts
        open_jobs = sum(1 for job in self._jobs.values() if job.results is None)
        return {
            "jobs_created": c.jobs,
            "files_uploaded": c.files,
            "requests_submitted": c.requests,
            "distinct_requests": len(c.submissions),
            "max_submissions_per_request": max(c.submissions.values(), default=0),
            "outcomes": dict(sorted(c.outcomes.items())),
            "failed_jobs": c.failed_jobs,
            "jobs_in_progress": open_jobs,
        }

    def reset(self) -> None:
        """Zero the counts (jobs and files stay)."""
        self._counts = _Counts()

    # -- routes --------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """The batch APIs on ``app`` (their admin routes: :func:`~chainfleet.sim.admin.add_admin_routes`)."""
        openai, anthropic = OpenAI(), Anthropic()

        def checked(handler: Handler, dialect: Dialect) -> Handler:
            """``handler`` behind what every batch route checks first: enabled, key, headers;
            a ``Failure`` it raises (a body it cannot read) is answered in ``dialect``'s words."""

            async def route(request: web.Request) -> web.StreamResponse:
                if not self.settings.enabled:
                    raise web.HTTPNotFound()
                failure = self._auth(request, dialect)
                if failure is not None:
                    return failure
                try:
                    return await handler(request)
                except Failure as refused:
                    status, body = dialect.error(refused)
                    return web.json_response(body, status=status)

            return route

        app.router.add_post("/v1/files", checked(self._upload, openai))
        app.router.add_get("/v1/files/{id}/content", checked(self._content, openai))
        app.router.add_post("/v1/batches", checked(self._create_openai, openai))
        app.router.add_get("/v1/batches", checked(self._list_openai, openai))
        app.router.add_get("/v1/batches/{id}", checked(self._get_openai, openai))
        app.router.add_post("/v1/messages/batches", checked(self._create_anthropic, anthropic))
        app.router.add_get("/v1/messages/batches", checked(self._list_anthropic, anthropic))
        app.router.add_get("/v1/messages/batches/{id}", checked(self._get_anthropic, anthropic))
        app.router.add_get("/v1/messages/batches/{id}/results", checked(self._results_anthropic, anthropic))

    def _auth(self, request: web.Request, dialect: Dialect) -> web.Response | None:
        try:
            dialect.authorize(request, self._host.settings.api_keys)
        except Failure as failure:
            status, body = dialect.error(failure)
            return web.json_response(body, status=status)
        return None

    # -- OpenAI --------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        fields = _multipart(request.headers.get("Content-Type", ""), await request.read())
        if "file" not in fields:
            raise Failure("bad_request", detail="file: a multipart/form-data upload with a file is required")
        file_id = f"file-sim{next(self._numbers)}"
        self._files[file_id] = fields.get("file", b"")
        self._counts.files += 1
        purpose = fields.get("purpose", b"batch").decode(errors="replace")
        return web.json_response(self._file_object(file_id, purpose))

    def _file_object(self, file_id: str, purpose: str) -> dict[str, Any]:
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(self._files[file_id]),
            "created_at": int(time.time()),
            "filename": f"{file_id}.jsonl",
            "purpose": purpose,
            "status": "processed",
        }

    async def _content(self, request: web.Request) -> web.StreamResponse:
        data = self._files.get(request.match_info["id"])
        if data is None:
            return _openai_error(404, "No such File object", "invalid_request_error")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create_openai(self, request: web.Request) -> web.StreamResponse:
        body = _object(await request.read(), "the body")
        data = self._files.get(str(body.get("input_file_id")))
        if data is None:
            return _openai_error(400, "input_file_id: no such file", "invalid_request_error")
        # bytes split only at \n and \r: a U+2028 inside a JSON string does not end a line
        numbered = enumerate(data.splitlines(), 1)
        lines = [_object(line, f"input file line {n}") for n, line in numbered if line.strip()]
        job = self._new_job("openai", [(str(x.get("custom_id")), x.get("body")) for x in lines])
        job.input_file_id, job.metadata = body.get("input_file_id"), body.get("metadata")
        return web.json_response(self._openai_batch(job))

    async def _get_openai(self, request: web.Request) -> web.StreamResponse:
        job = self._jobs.get(request.match_info["id"])
        if job is None or job.api != "openai":
            return _openai_error(404, "No such Batch object", "invalid_request_error")
        return web.json_response(self._openai_batch(job))

    async def _list_openai(self, request: web.Request) -> web.StreamResponse:
        """As OpenAI pages it: newest first, ``limit`` (default 20) a page, ``after`` an id."""
        jobs = [j for j in reversed(self._jobs.values()) if j.api == "openai"]
        after = request.query.get("after")
        if after is not None:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(after) + 1 :] if after in ids else []
        try:
            limit = max(1, min(100, int(request.query.get("limit", "20"))))
        except ValueError:
            limit = 20
        data = [self._openai_batch(j) for j in jobs[:limit]]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "has_more": len(jobs) > limit,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    def _openai_batch(self, job: _Job) -> dict[str, Any]:
        self._maybe_end(job)
        results = job.results or []
        states = Counter(state for _, state, _ in results)
        status = "in_progress"
        errors = None
        if job.results is not None:
            status = "failed" if job.fails else ("expired" if states["expired"] else "completed")
        if job.fails and job.results is not None:
            errors = {
                "object": "list",
                "data": [{"code": "server_error", "message": "simulated batch failure"}],
            }
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": errors,
            "input_file_id": job.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": job.files.get("output"),
            "error_file_id": job.files.get("error"),
            "created_at": int(job.wall),
            "in_progress_at": int(job.wall),
            "expires_at": int(job.wall + 86400),
            "completed_at": int(job.ended_wall) if status == "completed" and job.ended_wall else None,
            "request_counts": {
                "total": len(job.requests),
                "completed": states["succeeded"],
                "failed": states["errored"] + states["expired"],
            },
            "metadata": job.metadata,
        }

    def _openai_files(self, job: _Job) -> None:
        if job.fails:
            return
        out, err = [], []
        for custom_id, state, body in job.results or []:
            line: dict[str, Any] = {"id": f"batch_req_{custom_id}", "custom_id": custom_id}
            if state == "succeeded":
                out.append({**line, "response": {"status_code": 200, "body": body}, "error": None})
            elif state == "expired":
                error = {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired.",
                }
                err.append({**line, "response": None, "error": error})
            else:
                status, payload = body
                err.append({**line, "response": {"status_code": status, "body": payload}, "error": None})
        for name, lines in (("output", out), ("error", err)):
            if lines:
                file_id = f"file-sim{next(self._numbers)}"
                self._files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
                job.files[name] = file_id

    # -- Anthropic -----------------------------------------------------------------------------

    async def _create_anthropic(self, request: web.Request) -> web.StreamResponse:
        body = _object(await request.read(), "the body")
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return _anthropic_error(400, "invalid_request_error", "requests: a non-empty list is required")
        for i, r in enumerate(requests):
            if not isinstance(r, dict):
                raise Failure("bad_request", detail=f"requests.{i}: a request must be an object")
        job = self._new_job("anthropic", [(str(r.get("custom_id")), r.get("params")) for r in requests])
        return web.json_response(self._anthropic_batch(job, request))

    async def _get_anthropic(self, request: web.Request) -> web.StreamResponse:
        job = self._jobs.get(request.match_info["id"])
        if job is None or job.api != "anthropic":
            return _anthropic_error(404, "not_found_error", "message batch not found")
        return web.json_response(self._anthropic_batch(job, request))

    async def _list_anthropic(self, request: web.Request) -> web.StreamResponse:
        data = [self._anthropic_batch(j, request) for j in self._jobs.values() if j.api == "anthropic"]
        return web.json_response({"data": data[-20:], "has_more": False, "first_id": None, "last_id": None})

    def _anthropic_batch(self, job: _Job, request: web.Request) -> dict[str, Any]:
        self._maybe_end(job)
        ended = job.results is not None
        states = Counter(state for _, state, _ in job.results or [])
        base = str(request.url.origin())
        return {
            "id": job.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else len(job.requests),
                "succeeded": states["succeeded"],
                "errored": states["errored"],
                "canceled": 0,
                "expired": states["expired"],
            },
            "created_at": _iso(job.wall),
            "expires_at": _iso(job.wall + 86400),
            "ended_at": _iso(job.ended_wall) if ended and job.ended_wall else None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": f"{base}/v1/messages/batches/{job.id}/results" if ended else None,
        }

    async def _results_anthropic(self, request: web.Request) -> web.StreamResponse:
        job = self._jobs.get(request.match_info["id"])
        if job is None or job.api != "anthropic":
            return _anthropic_error(404, "not_found_error", "message batch not found")
        self._maybe_end(job)
        if job.results is None:
            return _anthropic_error(400, "invalid_request_error", "the batch is still in progress")
        lines = []
        for custom_id, state, body in job.results:
            result: dict[str, Any] = {"type": state}
            if state == "succeeded":
                result["message"] = body
            elif state == "errored":
                result["error"] = body[1]
            lines.append(json.dumps({"custom_id": custom_id, "result": result}) + "\n")
        return web.Response(body="".join(lines).encode(), content_type="application/binary")

    # -- processing ----------------------------------------------------------------------------

    def _new_job(self, api: str, requests: list[tuple[str, Any]]) -> _Job:
        number = next(self._numbers)
        prefix = "batch_sim" if api == "openai" else "msgbatch_sim"
        job_id = f"{prefix}{number}"
        seed = self._host.settings.seed
        fails = _unit(seed, "job", job_id) < self.settings.fail_rate
        job = _Job(job_id, api, requests, time.monotonic(), time.time(), fails)
        self._jobs[job_id] = job
        self._counts.jobs += 1
        self._counts.requests += len(requests)
        self._counts.submissions.update(custom_id for custom_id, _ in requests)
        return job

    def _maybe_end(self, job: _Job) -> None:
        """End the job once its delay has passed: decide and keep every request's outcome."""
        if job.results is not None or time.monotonic() - job.created < self.settings.delay:
            return
        dialect = OpenAI() if job.api == "openai" else Anthropic()
        job.results = [self._answer(job, dialect, custom_id, body) for custom_id, body in job.requests]
        job.ended_wall = time.time()
        if job.fails:
            self._counts.failed_jobs += 1
        self._counts.outcomes.update(state for _, state, _ in job.results)
        if job.api == "openai":
            self._openai_files(job)

    def _answer(self, job: _Job, dialect: Dialect, custom_id: str, body: Any) -> tuple[str, str, Any]:
        s = self._host.settings
        try:
            if job.fails:
                raise Failure("server_error")
            call = dialect.parse(body)
            if s.models and call.model not in s.models:
                raise Failure("model_not_found", model=call.model)
            trigger = prompt_trigger(call.prompt)
            check_quota(trigger, self._host.counts.spent, s.quota_tokens)
            failure = status_failure(trigger)
            if failure is not None:
                raise failure
            draw = _unit(s.seed, "batch", custom_id, self._counts.submissions[custom_id])
            if draw < self.settings.error_rate:
                raise Failure("server_error")
            if draw < self.settings.error_rate + self.settings.expire_rate:
                return custom_id, "expired", None
        except Failure as failure:
            return custom_id, "errored", dialect.error(failure)
        reply = self._host.respond(call)  # prose, JSON or tool calls (as online)
        self._host.counts.completed(call, reply.tokens)
        return custom_id, "succeeded", dialect.answer(call, reply, next(self._numbers))


def _object(raw: bytes, where: str) -> dict[str, Any]:
    """``raw`` as a JSON object, or a 400 naming what is wrong (:func:`~chainfleet.sim.wire.read_json`)."""
    value = read_json(raw, kind="bad_request", where=where)
    if not isinstance(value, dict):
        raise Failure("bad_request", detail=f"{where} must be a JSON object")
    return value


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body. By hand, not ``request.post()``: aiohttp's
    reader warns (DeprecationWarning) on some chunk boundaries, and the upload is one small form."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        return {}
    fields: dict[str, bytes] = {}
    for part in body.split(b"--" + match.group(1).encode())[1:]:
        head, _, data = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name is not None:
            fields[name.group(1).decode()] = data[:-2] if data.endswith(b"\r\n") else data
    return fields


def _openai_error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}, status=status
    )


def _anthropic_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)
