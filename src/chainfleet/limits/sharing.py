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

The headers also drive the rate (they are an earlier signal than a 429, as ECN is to TCP). Jobs
started together read their shares off the first header that counts the others' first calls and
start there (:meth:`KeyShare._calibrate`), before their first waves add up to a burst.
:meth:`KeyShare.observe` reconstructs the others' sends from the window count (the window holds
their sends of the last minute, so their sends so far are that plus what it held a minute
earlier), and :meth:`KeyShare.spare` gives the share of the limit nobody used in the last 2 s.
While 2% or more went unused, every job closes half of that gap a second, each in proportion to
its part of the use, so that together they close it at the same pace however many they are (a
loop that stays stable with the headers' lag of a second or two; the additive probe above had
each job add its own step, 4 jobs four steps, and drew a 429 about once a second). Under 2%
unused (the key is full): no probing upwards; and with others on the key, drift down in
proportion to our part of the use (five times faster above half of it, more than a fair share
however many share the key), so that unequal shares converge to fair without 429s; above half it
also stops growing while under 30% is unused. A job that started beside one already running
cannot reconstruct the minute before it came: it reads the spare only when a fifth or more is
unused, and 429s pace it otherwise. The reconstruction assumes the sim server's strict semantics
(``remaining`` = the limit less the last minute's count); a server whose ``remaining`` refills
like a bucket makes the estimate rougher, and the 429-driven AIMD above still holds.

A provider's own limiter is often a bucket of a second or two (``remaining`` is its level,
``reset`` under a few seconds: see ``limiter.short_bucket_fill``). Its headers say nothing of
the minute, so the reconstruction above is skipped, and the level itself is the signal
(:meth:`KeyShare.low_bucket`): jobs started together read their shares off the first header (what
left the full bucket is everyone's first calls); every job gives way while the level is low, by
more the larger its part of the limit and the emptier the bucket, and grows back in proportion
to its part. On the sim-server's ``--bucket-seconds 1`` model this took 2 jobs from 5.2% 429s
to about 1.3%, and 4 jobs from 16.9% to about 3%, at 93-99% of the limit. A bucket of a minute's
worth paced by a short one (the sim-server's default) reads the same way: its ``reset`` is the
short one's (see ``limiter.short_bucket_fill``); read as a window, its level showed nobody else,
and 2 and 4 jobs at 50 ms a call drew 7-18% 429s (on the virtual clock: 0-0.2% now). Since the
level says nothing of the minute, the others' share in the report is counted from the bucket
(:meth:`KeyShare._count_bucket`).

Example::

    share = KeyShare()
    share.sent(now)                     # the limiter admitted a call
    share.refused(now)                  # ... and the server said 429 anyway
    rate = limit * share.factor
"""

from __future__ import annotations

from collections import deque
from itertools import repeat

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
    #: the calm (seconds since the last decrease) counted at most: growth speeds up to
    #: ``1 + CALM_MAX / accelerate`` times ``increase`` and no further
    CALM_MAX = 60.0
    #: the headers' view of the last ``SPARE_SPAN`` s: while at least ``SPARE_FULL`` of the limit
    #: went unused, grow by ``SPARE_GAIN`` of the unused part above it a second, weighted by our
    #: part of the use (at least ``WEIGHT_MIN``): the jobs on a key together take ``SPARE_GAIN``
    #: of the gap a second however many they are (a stable loop with the headers' 1-2 s lag),
    #: and a job that starts small still grows
    SPARE_SPAN, SPARE_FULL, SPARE_GAIN, WEIGHT_MIN = 2.0, 0.02, 0.5, 0.1
    #: under ``SPARE_FULL`` unused, the key is full: a job with others on it (under ``ALONE`` of
    #: the use is its own) drifts down by ``DRIFT`` times its part of the use, of its factor a
    #: second; the larger a job's part, the faster it gives way, so shares converge to fair
    DRIFT, ALONE = 0.05, 0.97
    #: the first header that shows others' use sets the factor to our part of it, no lower than
    #: this (a job that starts beside others already running has sent 1 call of their 1,000)
    CALIBRATE_MIN = 0.1
    #: more than half of the key's use is more than a fair share however many share it: such
    #: a job drifts ``OVER_HALF`` times as fast (two jobs that start at 30% and 68% of the key
    #: are within a quarter of each other in 30 s, not a minute)
    OVER_HALF = 5.0
    #: above half of the use with under ``YIELD_BELOW`` of the limit unused, no growth and a
    #: drift of ``HALF_YIELD`` times the full key's
    HALF_YIELD, YIELD_BELOW = 0.5, 0.3
    #: a job that started beside others already running reads the headers' spare only from
    #: this much unused (see :meth:`answered`)
    SPARE_UNTRUSTED = 0.2

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
        self._first_sent: float | None = None
        #: the factor when the last burst of refusals came (TCP CUBIC's W_max)
        self.w_max = 1.0
        self._sent: deque[float] = deque()
        self._refused: deque[float] = deque()
        self._last_decrease = self._last_solo = self._last_low = self._low_at = float("-inf")
        #: the server's limiter is a short bucket (its remaining headers give its level)
        self._short = False
        self._grown_at: float | None = None
        # others' use of the key, from remaining-requests headers
        #: others' calls in the window at our first header that are older than this job
        self._others_before = 0.0
        #: calls (and leased requests) the limiter let out, in all
        self.sent_calls = 0
        self._others_last = 0.0
        self._used_last = 0.0
        self._limit = 0
        #: (when, others' sends so far as the headers tell them): see :meth:`alone`
        self._history: deque[tuple[float, float]] = deque()
        #: a short bucket's headers: the last (when, requests it lacked), what the server took
        #: while it was below full, and our calls of the same time (see :meth:`_count_bucket`)
        self._bucket_last: tuple[float, float] | None = None
        self._bucket_taken = 0.0
        self._bucket_own = 0

    # -- our own traffic ---------------------------------------------------------------------------

    def sent(self, now: float, requests: int = 1) -> None:
        """A call left (its limiter admitted it), or a block of ``requests`` a Ray worker
        leased: each counts, or the headers' count would seem to hold others' calls."""
        if self._first_sent is None:
            self._first_sent = now
        self.sent_calls += requests
        self._sent.extend(repeat(now, requests))
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
            target = min(target, max(self.floor, self.CALIBRATE_MIN, ours))
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
        if self._grown_at is None or now - self._low_at < self.LOW_HOLD:
            self._grown_at = now  # a short bucket ran low a moment ago: hold
        elapsed = max(0.0, now - self._grown_at)
        self.ceiling = min(1.0, self.ceiling + self.increase * self.CREEP * elapsed)
        # the longer since the last refusal, the faster (as TCP CUBIC): a job left alone by
        # the other finishing takes seconds, not minutes, to use the whole limit again
        # (a short bucket's give-way counts as a decrease: a job that never met a 429 had an
        # endless calm, grew back to the whole key at once after each give-way, and a job that
        # joined it was held to a tenth of the key for the overlap)
        calm = min(self.CALM_MAX, max(0.0, now - max(self._last_decrease, self._last_low)))
        rate = self.increase * (1.0 + calm / self.accelerate)
        spare = self.spare(now) if min(calm, now - self._last_solo) >= self.SPARE_SPAN else None
        if spare is not None and self._others_before > 0 and spare[0] < self.SPARE_UNTRUSTED:
            # the window held others' calls from before our first header: their sends of the
            # minute before we came are unknown, and the reconstruction is off by them (a
            # minute on, it adds back what it guessed a minute before). A job that started
            # beside a running one trusts the headers only when they say much is unused (the
            # other finished); otherwise 429s pace it, and the running one, which reads the
            # key right, gives way (reading "full" off the flawed count, the newcomer drifted
            # down to its floor and stayed there: 1 call a second to the other's 18)
            spare = None
        if self._short:
            # a short bucket (see low_bucket): a job with half the limit or more grows at the
            # full pace, a smaller one in proportion, so that however many share the key they
            # probe together at most twice as fast as one (4 jobs each at the full pace drew
            # 6.5% 429s)
            rate *= max(min(1.0, self.SHORT_GROW * self._part_of_limit(now)), self.WEIGHT_MIN)
        elif spare is not None:
            rate = self._by_headers(spare, elapsed)
        elif self.w_max * self.PLATEAU <= self.factor <= self.w_max:
            rate *= self.GENTLE  # near where the last refusal came: gently
        self.factor = min(self.ceiling, self.factor + rate * elapsed)
        self._grown_at = now
        return True

    def _by_headers(self, spare: tuple[float, float], elapsed: float) -> float:
        """The growth a second (of the limit) the headers' ``spare`` (unused, our part of the
        use) allow; where they say to give way, lower the factor for ``elapsed`` seconds."""
        unused, ours = spare
        shared = ours < self.ALONE
        if unused < self.SPARE_FULL:
            # the key is used to the limit: probing further only draws 429s. Shared, give way
            # in proportion to our part of the use (and the spare that leaves, all take up):
            # AIMD on the headers' early signal, so shares converge to fair without 429s
            if shared:
                self._give_way(self.DRIFT * ours * (self.OVER_HALF if ours > 0.5 else 1.0), elapsed)
            return 0.0
        if shared and ours > 0.5 and unused < self.YIELD_BELOW:
            # more than a fair share, and the little left unused is the others' to take: a
            # job that came later reads the key as full sooner (the minute before it came is
            # unknown to it), so without this the first one kept 6/7 of the key until it ended
            self._give_way(self.HALF_YIELD * self.DRIFT * ours, elapsed)
            return 0.0
        # close the gap together, each in proportion to its use (at least WEIGHT_MIN): a job
        # left alone takes the whole limit in seconds
        return self.SPARE_GAIN * (unused - self.SPARE_FULL) * max(ours, self.WEIGHT_MIN)

    def _give_way(self, drift: float, elapsed: float) -> None:
        self.factor = max(self.floor, self.factor * (1.0 - drift * elapsed))

    #: a short server bucket (a few seconds' worth) below this fill is congested: give way by
    #: ``LOW_STEP`` at most once per ``LOW_EVERY`` seconds, and do not grow for ``LOW_HOLD``
    LOW_FILL, LOW_STEP, LOW_EVERY, LOW_HOLD = 0.4, 0.97, 0.5, 1.0
    #: ... plus up to this much more as the bucket nears empty (times our part of the limit)
    EMPTY_STEP = 0.3
    #: jobs that start together on a short bucket start at this much of their share
    SHORT_START = 0.6
    #: on a short bucket a job grows at the full pace from ``1 / SHORT_GROW`` of the limit up
    SHORT_GROW = 2.0

    def low_bucket(self, fill: float, now: float, *, limit: int, lacks: float) -> bool:
        """A short server bucket is ``fill`` full (see ``limiter.short_bucket_fill``). Its level
        is the one early signal such a server gives (its ``remaining`` says nothing of the
        minute, so :meth:`observe`'s reconstruction cannot tell others' share): every job on the
        key reads the same level, and each gives way a little while it is low, as TCP does on an
        ECN mark, so together they keep below the limit instead of finding it by 429s. True
        when the factor fell."""
        first, self._short, self._limit = not self._short, True, limit
        self._count_bucket(now, limit, lacks)
        if first and not self._calibrated and fill > 0:
            # the first header: what left the bucket since it was full is everyone's first
            # calls (jobs started together each probe once), and what it refilled since our
            # probe left (at 50 ms a call, a second probe's worth: without it two jobs read
            # their probes as one, and went on at the whole limit each), at most our own calls
            # (a slow first answer saw the bucket refill past full: 2 jobs took 6 calls for 2
            # and started at a tenth of the key); our part is our share
            own = self.sent_calls - self.refusals
            since = now - self._first_sent if self._first_sent is not None else 0.0
            used = lacks + min(limit / WINDOW * since, own)
            if lacks >= 0.5 and used >= own + 0.5 and own > 0:  # every job starts drained
                self._calibrate(self.SHORT_START * own / used, now)
                return True
        if fill >= self.LOW_FILL:
            return False
        self._low_at = now
        if now - self._last_low < self.LOW_EVERY:
            return False
        self._last_low = now
        # the larger our part of the key's use, the larger the step (as DRIFT): shares converge
        ours = self._part_of_limit(now)
        # and the emptier the bucket, the larger: an empty one is an overload (jobs starting
        # together each at the whole limit), a low one the jitter of a full key
        depth = 2 * (1.0 - self.LOW_STEP) + self.EMPTY_STEP * (1.0 - fill / self.LOW_FILL)
        self.factor = max(self.floor, self.factor * (1.0 - depth * ours))
        self.lowest = min(self.lowest, self.factor)
        return True

    def _count_bucket(self, now: float, limit: int, lacks: float) -> None:
        """What the server took between two headers of a short bucket: its refill over the
        gap plus what the bucket lacks more (or less) than before, counted while it was below
        full at both (a full bucket wastes its refill); with our own calls of the same gap, the
        others' part (:attr:`others_pct`: the minute's reconstruction is not possible here, and
        each job's report said nobody else used the key). The lacks of consecutive gaps cancel,
        so the sum is as good as its first and last header."""
        last = self._bucket_last
        self._bucket_last = (now, lacks)
        if last is None or last[1] < 1.0 or lacks < 1.0 or now - last[0] > 1.0:
            return
        since = last[0]
        self._bucket_taken += max(0.0, limit / WINDOW * (now - since) + lacks - last[1])
        self._bucket_own += self._count(self._sent, since) - self._count(self._refused, since)

    def _part_of_limit(self, now: float) -> float:
        """Our sends the server took in the last ``SPARE_SPAN`` s, as a share of the limit."""
        # (a job younger than the span: over its life so far, or its first seconds read low)
        young = now - self._first_sent if self._first_sent is not None else 0.0
        span = min(self.SPARE_SPAN, max(0.5, young))
        own = self._count(self._sent, now - span) - self._count(self._refused, now - span)
        return min(1.0, own / (self._limit / WINDOW * span)) if self._limit > 0 else 0.5

    # -- what the headers say about everyone else --------------------------------------------------

    def observe(self, limit: int, remaining: int, now: float) -> None:
        """A response said ``remaining`` of ``limit`` requests are left in the server's window."""
        self._expire(now)
        self._limit = limit
        used = max(0, limit - remaining)
        own = len(self._sent) - len(self._refused)
        others = max(0.0, float(used - own))
        self._others_last, self._used_last = others, float(used)
        if not self._history:  # the first header: who else is in the window, and since when
            if others > self._since_first(limit, now):
                self._others_before = others  # a finished job's calls, or a job running before ours
            elif not self._calibrated and own > 0 and others > 0:
                self._calibrate(1.0 - others / used, now)
        # others' sends so far, E(t): the window holds E(t) - E(t - WINDOW), so E(t) is what it
        # holds plus E a window ago (each sample keeps the E it was given; before the first, 0)
        self._history.append((now, others + self._others_until(now - WINDOW)))
        while len(self._history) > 2 and self._history[1][0] <= now - WINDOW - 2 * self.SPARE_SPAN:
            self._history.popleft()

    def _since_first(self, limit: int, now: float) -> float:
        """The most anyone could have sent at ``limit`` a minute since our first call (a second
        at least): others' use in the window above that is older than this job."""
        if self._first_sent is None:
            return 0.0
        return limit / WINDOW * max(1.0, now - self._first_sent)

    def _calibrate(self, ours: float, now: float) -> None:
        """Jobs started together: the first header that counts the others' calls (their probes,
        their first wave) gives each its share before its first wave adds to theirs, so they
        start fair instead of finding their shares by 429s (4 jobs told nothing: the lowest
        share fell to 0.14 of the limit and the first 10 s drew a third of the 429s). Only a
        window the others can have filled since we started is a share of the present: calls a
        finished job left there (a run just before this one) are not someone sending now."""
        self._calibrated = True
        self.factor = min(self.factor, max(self.floor, self.CALIBRATE_MIN, ours))
        self.lowest = min(self.lowest, self.factor)
        self._last_decrease = self._grown_at = now

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
    def own_calls(self) -> int:
        """Our calls the server took (sent and not refused), in all."""
        return self.sent_calls - self.refusals

    @property
    def others_pct(self) -> float | None:
        """Of the requests the server took while this job ran, the share that was not ours
        (others' sends as :meth:`observe` reconstructs them, less what the window held from
        before this job began), in percent; None when no header said. A run started just
        after another finished sees that one's calls in the window: not someone sharing it."""
        if self._short and self._bucket_taken > 0:
            taken = max(self._bucket_taken, float(self._bucket_own))
            return round(100 * (taken - self._bucket_own) / taken, 1)
        if not self._history:
            return None
        others = max(0.0, self._history[-1][1] - self._others_before)
        total = others + max(0, self.own_calls)
        return round(100 * others / total, 1) if total > 0 else None

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
