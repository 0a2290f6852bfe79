"""Sharing a key with others nobody told us about: our share of the rate, found by AIMD.

Another job on the same API key (a colleague's batch, a second terminal, a notebook) takes from
the same server-side limit, but each process meters only itself. Two signs give it away:

- a 429 arrives although this process's own accounting is under the limit (its limiter
  admitted the call), and
- the ``remaining`` headers fall faster than this process's own use explains: with a limit
  ``L`` and ``R`` remaining, the server counted ``L - R`` in its window, of which this process
  sent (and was not refused) ``own``; the rest, ``L - R - own``, was someone else's.

A :class:`KeyShare` keeps a factor (0, 1] that the limiter applies to the limit. On a burst of
refusals under the limit (two in ``lookback`` seconds, or one when the headers show others'
use; a lone refusal is the jitter of a strict window and only lowers a ceiling by 3%) it
decreases multiplicatively, at most once per ``quiet`` seconds (the refusals of one burst are
one signal): by a tenth, or, when most of the last second was refused, down to the share that
was accepted (at least half); the first time the headers say who else uses the key, straight
down to our share of its use. Below 1 it grows back additively, ``increase`` of the limit per
second, faster the longer no refusal came (``accelerate`` seconds of calm double it) and ten
times more gently just below where the last refusals came (TCP CUBIC's plateau). So several
jobs that start together converge to fair shares, and one left alone climbs back to the whole
limit within seconds.

The headers also drive the growth (they are an earlier signal than a 429, as ECN is to TCP).
:meth:`KeyShare.observe` reconstructs the others' sends from the window count (the window
holds their sends of the last minute, so their sends so far are that plus what it held a
minute earlier), and :meth:`KeyShare.spare` gives the share of the limit nobody used in the
last 2 s. A fifth or more unused (another job finished): take our part of it in seconds. Under
5% unused (the key is full): no probing upwards; and with others on the key, drift down by 1%
of the factor a second (5% when we send more than half of what the key carries, more than a
fair share however many share it), so that unequal shares still converge without 429s. The
reconstruction assumes the sim server's strict semantics (``remaining`` = the limit less the
last minute's count); a server whose ``remaining`` refills like a bucket makes the estimate
rougher, and the 429-driven AIMD above still holds.

Example::

    share = KeyShare()
    share.sent(now)                     # the limiter admitted a call
    share.refused(now)                  # ... and the server said 429 anyway
    rate = limit * share.factor
"""

from __future__ import annotations

from collections import deque

__all__ = ["KeyShare"]

#: the server windows this estimate assumes for remaining-requests headers (per minute)
WINDOW = 60.0


class KeyShare:
    """This process's share of a key's rate limit, and what the headers say others took."""

    #: the decrease on a burst of refusals: a tenth, or down to the share accepted (at least half)
    STEP_MAX, STEP_MIN = 0.9, 0.5
    #: within this share below the factor of the last refusals, grow ``GENTLE`` times as fast
    PLATEAU, GENTLE = 0.85, 0.1
    #: how fast the ceiling a lone refusal lowered comes back, as a share of ``increase``: slowly,
    #: since a strict server refuses again once it is back (told the exact limit, 1/8 brought
    #: it back in 16 s, and a 429 with it: 0.66% of the calls where the target is 0.5%)
    CREEP = 1 / 64
    #: the headers say nobody else sent for ``ALONE_SPAN`` s (at most ``ALONE_SLACK`` calls) and
    #: no refusal came for as long: grow by ``ALONE_GROWTH`` of the limit a second
    SPARE_SPAN, SPARE_MIN, SPARE_GAIN = 2.0, 0.2, 0.3
    #: under this share unused, the key is full: no probing upwards, and a job with others on
    #: the key drifts down by ``DRIFT`` of its factor a second
    SPARE_FULL, DRIFT = 0.05, 0.01

    def __init__(
        self,
        *,
        increase: float = 0.015,
        accelerate: float = 4.0,
        floor: float = 0.02,
        quiet: float = 1.0,
        lookback: float = 1.0,
    ) -> None:
        self.factor = 1.0
        self.increase = increase
        self.accelerate = accelerate
        self.floor = floor
        self.quiet = quiet
        self.lookback = lookback
        #: refusals while our own accounting was under the limit
        self.refusals = 0
        self.decreases = 0
        #: the lowest factor reached
        self.lowest = 1.0
        #: lone refusals (no sign of anyone else) lower this cap on the factor a little
        self.ceiling = 1.0
        self.solo_refusals = 0
        self._calibrated = False
        #: the factor when the last burst of refusals came (TCP CUBIC's W_max)
        self.w_max = 1.0
        self._sent: deque[float] = deque()
        self._refused: deque[float] = deque()
        self._last_decrease = self._last_solo = float("-inf")
        self._grown_at: float | None = None
        # others' use of the key, from remaining-requests headers
        self._others_sum = 0.0
        self._used_sum = 0.0
        self._others_last = 0.0
        self._used_last = 0.0
        self._limit = 0
        #: (when, others' sends so far as the headers tell them): see :meth:`alone`
        self._history: deque[tuple[float, float]] = deque()

    # -- our own traffic ---------------------------------------------------------------------------

    def sent(self, now: float) -> None:
        """A call left (its limiter admitted it)."""
        self._sent.append(now)
        self._expire(now)

    def refused(self, now: float, sent_at: float | None = None) -> bool:
        """A 429 while our own accounting was under the limit; True when the factor fell.

        A call that left (``sent_at``) before the factor last fell or the ceiling last came
        down was sent at the old rate: its 429 is the same signal again, not a new one (one
        reaction per round trip, as TCP reacts once per window)."""
        self.refusals += 1
        self._refused.append(now)
        self._expire(now)
        if sent_at is not None and sent_at < max(self._last_decrease, self._last_solo):
            return False
        if now - self._last_decrease < self.quiet:
            return False
        sent = self._count(self._sent, now - self.lookback)
        refused = self._count(self._refused, now - self.lookback)
        ours = self.our_share()
        if refused < 2 and (ours is None or ours >= 0.9):
            return self._solo(now) if now - self._last_solo >= self.quiet else False
        accepted = max(0.0, 1.0 - refused / sent) if sent else 0.5
        # far over (most of the last second refused): down to what was accepted; else a tenth
        # (a few refusals among a small job's few calls are noise, not a measure)
        step = self.STEP_MAX if accepted >= 0.75 else max(self.STEP_MIN, accepted)
        target = self.factor * step
        if ours is not None and not self._calibrated:
            # the first time the headers say who else uses the key: go straight to our share
            target = min(target, max(self.floor, ours))
            self._calibrated = True
        self.w_max = self.factor
        self.factor = max(self.floor, target)
        self.lowest = min(self.lowest, self.factor)
        self.decreases += 1
        self._last_decrease = self._grown_at = now
        return True

    def _solo(self, now: float) -> bool:
        """One refusal with no sign of anyone else: the server's window is stricter than our
        pacing (or the network bunched our calls). Keep 3% further below it from now on; the
        ceiling creeps back up by ``increase * CREEP`` a second (3% in about two minutes)."""
        self.solo_refusals += 1
        self.ceiling = max(0.85, min(self.ceiling, self.factor) * 0.97)
        self.factor = min(self.factor, self.ceiling)
        self.lowest = min(self.lowest, self.factor)
        self._last_solo = self._grown_at = now
        return True

    def answered(self, now: float) -> bool:
        """A call was answered: below the ceiling, the factor grows back by ``increase`` a
        second; the ceiling itself (lowered by lone refusals) by ``CREEP`` of that."""
        if self.factor >= 1.0:
            return False
        if self._grown_at is None:
            self._grown_at = now
        elapsed = max(0.0, now - self._grown_at)
        self.ceiling = min(1.0, self.ceiling + self.increase * self.CREEP * elapsed)
        # the longer since the last refusal, the faster (as TCP CUBIC): a job left alone by
        # the other finishing takes seconds, not minutes, to use the whole limit again
        calm = max(0.0, now - self._last_decrease)
        rate = self.increase * (1.0 + calm / self.accelerate)
        spare = self.spare(now) if min(calm, now - self._last_solo) >= self.SPARE_SPAN else None
        if spare is not None and spare[0] >= self.SPARE_MIN:
            # the headers say part of the limit went unused (another job finished or paused):
            # take up our part of it (in proportion to our use, so that however many jobs are
            # left they take it together once) in seconds, not by the slow probe
            rate = max(rate, self.SPARE_GAIN * spare[0] * spare[1])
        elif spare is not None and spare[0] < self.SPARE_FULL:
            # the key is used to the limit: probing further only draws 429s. Shared, drift
            # down in proportion (and the spare lets every job grow back by the same step):
            # AIMD on the headers' early signal, so shares still converge to fair without 429s
            # (more than half of the use is more than a fair share however many share the key)
            rate = 0.0
            if spare[1] < 0.9:
                drift = self.DRIFT * (5.0 if spare[1] > 0.5 else 1.0)
                self.factor = max(self.floor, self.factor * (1.0 - drift * elapsed))
        elif self.w_max * self.PLATEAU <= self.factor <= self.w_max:
            rate *= self.GENTLE  # near where the last refusal came: gently
        self.factor = min(self.ceiling, self.factor + rate * elapsed)
        self._grown_at = now
        return True

    # -- what the headers say about everyone else --------------------------------------------------

    def observe(self, limit: int, remaining: int, now: float) -> None:
        """A response said ``remaining`` of ``limit`` requests are left in the server's window."""
        self._expire(now)
        self._limit = limit
        used = max(0, limit - remaining)
        own = len(self._sent) - len(self._refused)
        others = max(0.0, float(used - own))
        self._others_last, self._used_last = others, float(used)
        self._others_sum += others
        self._used_sum += used
        # others' sends so far, E(t): the window holds E(t) - E(t - WINDOW), so E(t) is what it
        # holds plus E a window ago (each sample keeps the E it was given; before the first, 0)
        self._history.append((now, others + self._others_until(now - WINDOW)))
        while len(self._history) > 2 and self._history[1][0] <= now - WINDOW - 2 * self.SPARE_SPAN:
            self._history.popleft()

    def _others_until(self, at: float) -> float:
        """Others' sends from our first header to ``at`` (0 before it): the last sample at or
        before ``at``, looked for from whichever end of the (time-ordered) history is nearer."""
        history = self._history
        if not history or history[0][0] > at:
            return 0.0
        if at - history[0][0] < history[-1][0] - at:  # nearer the oldest sample: from the front
            found = 0.0
            for when, total in history:
                if when > at:
                    break
                found = total
            return found
        for when, total in reversed(history):  # nearer the newest (spare() asks every call)
            if when <= at:
                return total
        return 0.0

    def spare(self, now: float) -> tuple[float, float] | None:
        """What the headers say of the last ``SPARE_SPAN`` seconds: the share of the limit
        nobody used (1 less our own sends and the others': their count in the server's window
        grew by their sends less what left it, which :meth:`observe` adds back), and our part
        of what was used. None when the headers have not covered that span."""
        if not self._history or self._history[0][0] > now - self.SPARE_SPAN or self._limit <= 0:
            return None
        others = max(0.0, self._history[-1][1] - self._others_until(now - self.SPARE_SPAN))
        since = now - self.SPARE_SPAN
        own = self._count(self._sent, since) - self._count(self._refused, since)
        capacity = self._limit / WINDOW * self.SPARE_SPAN
        ours = own / (own + others) if own + others > 0 else 1.0
        return max(0.0, 1.0 - (own + others) / capacity), ours

    def our_share(self) -> float | None:
        """Our share of the key's recent use by the last headers (None: they told nobody else)."""
        if self._others_last <= 0 or self._used_last <= 0:
            return None
        return max(0.0, 1.0 - self._others_last / self._used_last)

    @property
    def others_pct(self) -> float | None:
        """Of the requests the server counted in its window, the share that was not ours
        (averaged over every response that said), in percent; None when no header said."""
        if self._used_sum <= 0:
            return None
        return round(100 * self._others_sum / self._used_sum, 1)

    @property
    def shared(self) -> bool:
        """Whether the signs say someone else uses this key: others took 5% or more by the
        headers, or refusals came in bursts (twice) while we kept under the limit."""
        pct = self.others_pct
        return (pct is not None and pct >= 5.0) or self.decreases >= 2

    # -- helpers -----------------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        horizon = now - WINDOW
        for times in (self._sent, self._refused):
            while times and times[0] <= horizon:
                times.popleft()

    @staticmethod
    def _count(times: deque[float], since: float) -> int:
        count = 0
        for at in reversed(times):
            if at <= since:
                break
            count += 1
        return count
