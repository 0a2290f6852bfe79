"""``fleet``: what the user's own chain gets beside its item.

The chain is an async function of one item, ``async def article(topic, fleet)``. Through
``fleet`` it reaches what chainfleet gives every call and step of that item:

- :meth:`Fleet.openai` and :meth:`Fleet.anthropic`: the official async SDK clients, their own
  retries off (chainfleet retries, with the run's one policy), their HTTP through chainfleet
  (:meth:`Fleet.http_client`): limits, retries, the journal, stats and cost;
- ``with fleet.stage("research"):`` labels the calls inside it (the report, progress and
  timeline show stages); a call outside any stage is labelled by its model;
- ``await fleet.step("search", fn, *args)``: a side effect that is not a model call (a web
  search, a write), run once per item: its JSON result is journaled, and a run that goes again
  gets it back without calling ``fn``;
- ``await fleet.review("draft", text)``: a person decides, exactly like a YAML stage's
  ``review:``. The first time, the item is parked (``needs_review``, exit 3, listed by
  ``chainfleet review OUT``); after the decision, ``chainfleet resume`` runs the item again,
  its calls replayed from the journal, and ``review`` returns the :class:`ReviewDecision`.

Example::

    async def article(topic, fleet):
        client = fleet.openai()
        with fleet.stage("research"):
            notes = await client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        decision = await fleet.review("draft", notes.choices[0].message.content)
        return decision.text
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chainfleet.code.gateway import STAGE, ItemScope
from chainfleet.errors import PermanentError
from chainfleet.report.quality import assess, topic_of
from chainfleet.store.journal import JournalEntry

if TYPE_CHECKING:
    import httpx2 as httpx

    from chainfleet.inputs import Item

__all__ = ["Fleet", "ItemParked", "ReviewDecision", "StepError"]


class ItemParked(BaseException):  # noqa: N818 - a signal, not an error: ``except Exception`` lets it by
    """Raised by :meth:`Fleet.review` when the item must wait for a person: the runner parks it."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


class StepError(PermanentError):
    """A ``fleet.step`` whose result is not a JSON value (it could not be journaled)."""

    kind = "code_error"


@dataclass(frozen=True)
class ReviewDecision:
    """A person's decision on an output: ``approve``, ``edit`` or ``reject``. ``text`` is what
    the chain goes on with (the edit, or the output approved or rejected); ``note`` the
    reviewer's note (a rejection's feedback)."""

    action: str
    text: str
    note: str = ""

    @property
    def approved(self) -> bool:
        """Approved as it was, or edited: the chain may go on with :attr:`text`."""
        return self.action != "reject"

    def __str__(self) -> str:
        return self.text


class Fleet:
    """What the user's function gets for one item; see the module docstring."""

    def __init__(self, scope: ItemScope) -> None:
        self.scope = scope

    @property
    def item(self) -> Item:
        """The item: its ``id``, ``index`` and ``fields``."""
        return self.scope.chain.item

    def http_client(self) -> httpx.AsyncClient:
        """The run's httpx client whose requests go through chainfleet."""
        return self.scope.gateway.client

    def openai(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` whose calls go through chainfleet (its retries off).
        ``kwargs`` go to the client (``base_url=``, ``api_key=`` ...; else its environment).
        Items asking with the same ``kwargs`` share one client (see :meth:`_client`)."""
        return self._client("openai", "AsyncOpenAI", kwargs)

    def anthropic(self, **kwargs: Any) -> Any:
        """An ``anthropic.AsyncAnthropic`` whose calls go through chainfleet (its retries off)."""
        return self._client("anthropic", "AsyncAnthropic", kwargs)

    def _client(self, module: str, name: str, kwargs: dict[str, Any]) -> Any:
        """The SDK client of the run for these ``kwargs``: made once and shared by the items
        (an SDK client is safe to share between tasks, and making one per item cost more CPU
        than the rest of a call's way through chainfleet at zero latency). Arguments that
        cannot be told apart by value (unhashable ones) get a client of their own."""
        import importlib

        kwargs.setdefault("max_retries", 0)
        try:
            key: Any = (module, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:
            key = None
        clients = self.scope.gateway.clients
        found = clients.get(key) if key is not None else None
        if found is None:
            sdk = getattr(importlib.import_module(module), name)
            found = sdk(http_client=self.http_client(), **kwargs)
            if key is not None:
                clients[key] = found
        return found

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Label the calls made inside the block ``name`` (tasks started inside it too)."""
        token = STAGE.set(str(name))
        try:
            yield
        finally:
            STAGE.reset(token)

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` (awaited if it gives an awaitable) once per item: its result,
        a JSON value, is journaled; when the item runs again it comes back from the journal."""
        ctx, chain = self.scope.ctx, self.scope.chain
        digest = _step_hash(name, args, kwargs)
        occurrence = self.scope.occurrence(digest)
        found = ctx.store.journal.get(ctx.run_id, chain.item.index, digest, occurrence)
        if found is not None:
            return json.loads(found.body)
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        try:
            body = json.dumps(result, ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise StepError(f"step {name!r} returned {type(result).__name__}, not a JSON value") from exc
        entry = JournalEntry(digest, occurrence, "step", 0, body, stage=name)
        ctx.store.journal.put(ctx.run_id, chain.item.index, entry)
        await ctx.store.durable()
        return json.loads(body)

    async def review(self, name: str, text: str) -> ReviewDecision:
        """Ask a person about ``text``: parks the item the first time (raises
        :class:`ItemParked`, which the runner handles); once decided, the decision."""
        hook, chain = self.scope.ctx.review, self.scope.chain
        text = str(text)
        entry = await hook.decision(chain.item.id, name, text)
        if entry is not None and entry.state != "waiting":
            await hook.take(entry.qid)
            action = {"approved": "approve", "edited": "edit", "rejected": "reject"}.get(
                entry.state, entry.state
            )
            return ReviewDecision(action, entry.final_output, entry.note or "")
        if entry is not None:  # still waiting
            hook.parked += 1
        else:
            topic = topic_of(chain.item.fields, self.scope.ctx.pipeline.input)
            await hook.ask(
                run_id=self.scope.ctx.run_id,
                index=chain.item.index,
                item_id=chain.item.id,
                stage=name,
                reason="the chain asked for review",
                output=text,
                checks={},
                quality=float(assess(text, topic).score),
            )
        raise ItemParked(name)


def _step_hash(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    data = json.dumps(["step", name, list(args), kwargs], sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:32]
