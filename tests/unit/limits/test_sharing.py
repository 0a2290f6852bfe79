"""Slow start, told limits, and several jobs sharing one key, on the virtual clock.

The "server" here is the sim server's strict limit (:class:`WindowLimit`: 1,200 requests/min, at
most 20 in any second) driven by the same virtual clock, and each job is a ModelLimiter with its
own KeyShare, exactly as separate processes would be: they share nothing but the server.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chainfleet.clock import VirtualClock
from chainfleet.limits.headers import RateLimitInfo
from chainfleet.limits.limiter import ModelLimiter, TooLarge
from chainfleet.limits.sharing import KeyShare
from chainfleet.sim.bucket import TokenBucket
from chainfleet.sim.limits import RateLimits
from chainfleet.sim.shortbucket import SecondBucket
from chainfleet.sim.window import WindowLimit

LIMIT = 1200


def on_clock(clock: VirtualClock, make: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        return await clock.run(make())

    return asyncio.run(main())


@dataclass
class Job:
    limiter: ModelLimiter
    calls: int
    claimed: int = 0
    ok: int = 0
    refused: int = 0
    finished: float = 0.0
    started: float = 0.0
    sends: list[float] = field(default_factory=list)

    def rate(self, start: float, end: float) -> float:
        """Calls per second that the server took from this job between ``start`` and ``end``."""
        return sum(1 for t in self.sends if start <= t < end) / (end - start)


async def run_jobs(
    clock: VirtualClock,
    server: TokenBucket,
    jobs: list[Job],
    *,
    workers: int = 50,
    latency: float = 0.4,
    headers: bool = True,
    starts: list[float] | None = None,
    jitter: random.Random | None = None,
    spread: float = 0.2,
) -> None:
    """Every job's workers call until the job's ``calls`` are answered; a call the server's
    window cannot take is a 429 with the server's wait, as the sim server answers it. Job
    ``i`` starts at ``starts[i]`` (default: all at once). With ``jitter``, each call takes
    ``latency`` to ``latency + spread`` s, drawn from it."""

    async def worker(job: Job) -> None:
        while job.claimed < job.calls:
            job.claimed += 1
            await call(job)

    async def call(job: Job) -> None:
        while True:
            reservation = await job.limiter.acquire(0)
            wait = server.wait(1)
            if wait <= 0:
                break
            job.refused += 1
            job.limiter.refused(reservation, wait)
        server.take(1)
        job.sends.append(clock.now())
        await clock.sleep(latency + (jitter.uniform(0.0, spread) if jitter else 0.0))
        info = RateLimitInfo(
            limit_requests=LIMIT, remaining_requests=server.remaining, reset_requests=server.time_to_full()
        )
        job.limiter.observe(info if headers else RateLimitInfo())
        job.limiter.settle(reservation, None)
        job.ok += 1
        if job.ok == job.calls:
            job.finished = clock.now()

    async def start(job: Job, at: float) -> None:
        await clock.sleep(at)
        job.started = clock.now()
        await asyncio.gather(*(worker(job) for _ in range(workers)))

    at = starts or [0.0] * len(jobs)
    await asyncio.gather(*(start(job, when) for job, when in zip(jobs, at, strict=True)))


def make_jobs(clock: VirtualClock, count: int, *, told: bool, calls: int) -> list[Job]:
    return [
        Job(
            ModelLimiter(rpm=LIMIT if told else None, clock=clock, rng=random.Random(n)),
            calls=calls,
        )
        for n in range(count)
    ]


def test_told_nothing_a_single_probe_goes_first_then_calls_are_paced_from_empty() -> None:
    clock = VirtualClock()
    server = WindowLimit(LIMIT, window=1.0, clock=clock.now)
    [job] = make_jobs(clock, 1, told=False, calls=300)
    on_clock(clock, lambda: run_jobs(clock, server, [job], workers=200))
    assert job.refused == 0  # 200 workers, and not one call refused: no first wave
    assert job.sends[1] >= 0.4  # the second call waited for the probe's answer (0.4 s)
    assert job.limiter.probes == 1
    # then at the learned rate, 98% of 20/s (the window guard: 20 in any 1.02 s, not 19 in
    # any second, which cost 5% of the limit): 299 more calls in about 15.3 s
    assert job.finished == pytest.approx(0.4 + 299 / 19.6 + 0.4, abs=0.1)
    # and never more than the server's 20 in any second
    for i in range(len(job.sends) - 20):
        assert job.sends[i + 20] - job.sends[i] > 1.0


def test_a_server_without_rate_limit_headers_ends_slow_start_unmetered() -> None:
    clock = VirtualClock()
    server = WindowLimit(10**6, window=1.0, clock=clock.now)
    [job] = make_jobs(clock, 1, told=False, calls=100)
    on_clock(clock, lambda: run_jobs(clock, server, [job], workers=50, headers=False))
    assert job.limiter.requests is None
    # one probe (0.4 s), then 50 at a time: 99 calls in two rounds
    assert job.finished == pytest.approx(0.4 + 2 * 0.4)


def test_a_told_limit_starts_nearly_empty_so_the_first_minute_holds_it() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(rpm=120, clock=clock)
    times: list[float] = []

    async def main() -> None:
        async def one() -> None:
            while clock.now() < 60.0:
                await limiter.acquire(0)
                times.append(clock.now())

        await asyncio.gather(*(one() for _ in range(50)))

    on_clock(clock, main)
    assert sum(1 for t in times if t < 60.0) <= 120  # the issue measured 121 with full buckets


def test_a_told_limit_above_the_servers_gives_way_to_the_servers() -> None:
    limiter = ModelLimiter(rpm=1500, clock=VirtualClock())
    limiter.observe(RateLimitInfo(limit_requests=1200, remaining_requests=1100))
    assert limiter.limit_rpm == pytest.approx(1200 * 0.98)
    assert limiter.server_rpm == 1200 and limiter.told_rpm == 1500


def test_a_call_above_the_whole_tokens_per_minute_limit_fails_at_once() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(tpm=10_000, clock=clock)

    async def main() -> None:
        await limiter.acquire(tokens=12_000)

    with pytest.raises(TooLarge) as caught:
        on_clock(clock, main)
    assert "12,000 tokens" in str(caught.value) and "10,000" in str(caught.value)
    assert "never" in str(caught.value)
    assert clock.now() == 0.0  # not one second spent waiting for it


def test_one_refusal_alone_lowers_the_ceiling_a_little_not_the_share() -> None:
    share = KeyShare()
    for t in range(20):
        share.sent(t * 0.05)
    assert share.refused(1.0)
    assert share.factor == pytest.approx(0.97)  # a strict window's jitter: 3% below it
    assert not share.shared


@pytest.mark.parametrize("count", [2, 4])
@pytest.mark.parametrize("told", [False, True])
def test_jobs_sharing_a_key_converge_to_fair_shares_with_few_429s(count: int, told: bool) -> None:
    clock = VirtualClock()
    server = WindowLimit(LIMIT, window=1.0, clock=clock.now)
    jobs = make_jobs(clock, count, told=told, calls=300)
    on_clock(clock, lambda: run_jobs(clock, server, jobs))
    calls = sum(j.ok + j.refused for j in jobs)
    refused = sum(j.refused for j in jobs)
    assert all(j.ok == j.calls for j in jobs)  # every job finished
    assert refused / calls <= 0.05
    end = max(j.finished for j in jobs)
    # combined, at least 90% of the limit in the steady state (the middle 80% of the run, as
    # benchmarks/rate_limits.py measures it)
    sends = [t for j in jobs for t in j.sends]
    steady = sum(1 for t in sends if 0.1 * end <= t < 0.9 * end) / (0.8 * end)
    assert steady >= 0.9 * LIMIT / 60
    rates = [j.calls / j.finished for j in jobs]
    assert max(rates) / min(rates) <= 2.0  # each job's share within 2x of the others'
    assert all(j.limiter.share.shared for j in jobs)  # and each knows it was not alone


def test_a_share_of_the_limit_is_paced_at_its_rate_not_rounded_down_to_whole_calls() -> None:
    clock = VirtualClock()
    share = KeyShare()
    share.factor = 0.49  # half the key, as two jobs on it settle: 1,200 x 0.49 = 9.8 calls/s
    limiter = ModelLimiter(rpm=LIMIT, clock=clock, share=share, headroom=0.98)
    limiter.observe(RateLimitInfo(limit_requests=LIMIT, remaining_requests=LIMIT))
    times: list[float] = []

    async def main() -> None:
        async def one() -> None:
            await limiter.acquire(0)
            times.append(clock.now())

        await asyncio.gather(*(one() for _ in range(200)))

    on_clock(clock, main)
    rate = (len(times) - 1) / (times[-1] - times[0])
    # a window guard of floor(9.8) = 9 calls a second held it at 9/s, 8% under its share
    assert rate == pytest.approx(LIMIT * 0.49 / 60, rel=0.01)
    for i in range(len(times) - 10):  # never more than 10 in any second
        assert times[i + 10] - times[i] > 1.0


def test_after_a_lone_refusal_the_ceiling_comes_back_over_minutes_not_seconds() -> None:
    share = KeyShare()
    for t in range(20):
        share.sent(t * 0.05)
    share.refused(1.0)
    for step in range(1, 600):  # a minute of answered calls, 10 a second, no refusal
        share.answered(1.0 + step / 10)
    # the ceiling a strict server's window set is mostly still there: at 1/8 of the growth it
    # was back at the whole limit in 16 s, and with it the next 429 (0.66% of calls told right)
    assert 0.97 < share.factor <= 0.985
    for step in range(600, 1600):  # but it does come back, in about two minutes
        share.answered(1.0 + step / 10)
    assert share.factor == 1.0


def test_when_the_other_job_finishes_the_one_left_takes_the_whole_limit_within_seconds() -> None:
    clock = VirtualClock()
    server = WindowLimit(LIMIT, window=1.0, clock=clock.now)
    short, long = make_jobs(clock, 2, told=False, calls=150)
    long.calls = 450
    on_clock(clock, lambda: run_jobs(clock, server, [short, long]))
    assert short.ok == 150 and long.ok == 450
    # from 3 s after the other job finished: the headers say half the limit goes unused, so
    # the job left alone climbs to it in seconds (the slow probe near its last refusal took
    # more than 10 s, most of a short job's remaining run)
    start, end = short.finished + 3.0, long.finished - 0.5
    assert end - start > 3.0
    late = sum(1 for t in long.sends if start <= t < end) / (end - start)
    assert late >= 0.9 * LIMIT / 60


def test_429s_of_calls_that_left_before_the_last_one_are_one_signal_not_two() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(rpm=LIMIT, clock=clock)  # told right, alone on the key

    async def main() -> None:
        early = [await limiter.acquire(0) for _ in range(3)]  # three calls on their way
        await clock.sleep(0.3)
        for reservation in early:  # a strict window refuses all three
            limiter.refused(reservation, 0.05)
        assert limiter.share.factor == pytest.approx(0.97)  # one lone refusal's 3%
        await clock.sleep(1.0)
        late = await limiter.acquire(0)  # sent after the reaction: a new signal
        limiter.refused(late, 0.05)

    on_clock(clock, main)
    # the first three were sent at the old rate: counted as 429s, reacted to once (as two
    # bursts they cut the told limit to 87% and a cold start told right ran at 90%)
    assert limiter.share.refusals == 4
    assert limiter.share.factor < 0.97


def test_jobs_that_start_unequal_on_a_full_key_drift_to_fair_shares_without_429s() -> None:
    clock = VirtualClock()
    server = WindowLimit(LIMIT, window=1.0, clock=clock.now)
    jobs = make_jobs(clock, 2, told=True, calls=700)
    jobs[0].limiter.share.factor, jobs[1].limiter.share.factor = 0.3, 0.68  # 29% and 66% of the key
    factors: list[tuple[float, float]] = []

    async def both() -> None:
        async def sample() -> None:
            await clock.sleep(30.0)
            factors.append((jobs[0].limiter.share.factor, jobs[1].limiter.share.factor))

        await asyncio.gather(run_jobs(clock, server, jobs), sample())

    on_clock(clock, both)
    assert all(j.ok == j.calls for j in jobs)
    [(first, second)] = factors
    # the headers say the key is full: the job with more than half of the use gives way
    # little by little, and the spare that leaves is taken up by both alike (AIMD on the
    # headers' signal instead of on 429s); without that, 0.30 and 0.68 stayed as they were
    assert min(first, second) / max(first, second) >= 0.75
    assert first + second >= 0.9  # and together they still use the key
    assert sum(j.refused for j in jobs) <= 0.02 * sum(j.ok for j in jobs)


def test_jobs_started_together_take_their_shares_from_the_first_header_before_any_429() -> None:
    clock = VirtualClock()
    server = WindowLimit(LIMIT, window=1.0, clock=clock.now)
    jobs = make_jobs(clock, 4, told=False, calls=300)
    seen: dict[str, Any] = {}

    async def run() -> None:
        async def sample() -> None:
            await clock.sleep(1.5)
            seen["factors"] = [j.limiter.share.factor for j in jobs]
            seen["refused"] = sum(j.refused for j in jobs)

        await asyncio.gather(run_jobs(clock, server, jobs), sample())

    on_clock(clock, run)
    # each reads its quarter off the header that counted the four probes, before its first
    # wave: no burst of 429s to find the shares by (that drew 20 429s, this 4 in all)
    assert seen["factors"] == pytest.approx([0.25] * 4, abs=0.05)
    assert seen["refused"] == 0
    assert sum(j.refused for j in jobs) <= 6


def test_a_job_started_beside_one_already_running_gets_a_fair_share() -> None:
    clock = VirtualClock()
    server = WindowLimit(LIMIT, window=1.0, clock=clock.now)
    first, second = make_jobs(clock, 2, told=False, calls=900)
    on_clock(clock, lambda: run_jobs(clock, server, [first, second], starts=[0.0, 20.0]))
    assert first.ok == second.ok == 900
    # 20 s after the second began, until the first ends: the first gives way (it kept 16-17
    # of the 20 calls a second, while the newcomer, which cannot know the minute before it
    # came, read the key as full and was left 1-2.5)
    start, end = 40.0, first.finished
    assert end - start > 10.0
    rates = first.rate(start, end), second.rate(start, end)
    assert max(rates) / min(rates) <= 1.5
    assert sum(rates) >= 0.88 * LIMIT / 60
    assert second.limiter.share.shared and first.limiter.share.shared


def test_calls_a_finished_run_left_in_the_window_are_not_taken_for_another_job() -> None:
    clock = VirtualClock()
    server = WindowLimit(LIMIT, window=1.0, clock=clock.now)
    [job] = make_jobs(clock, 1, told=False, calls=300)

    async def main() -> None:
        for _ in range(600):  # a run just before this one: 600 calls in the last 30 s
            await clock.sleep(0.05)
            server.take(1)
        await run_jobs(clock, server, [job])

    on_clock(clock, main)
    # its first header counts 600 calls that are not its own, more than anyone could have sent
    # since it began: nobody shares the key now, so no share of 1/600 (taken for one, it ran
    # its first 5 s at 40%) and no "another job shares this key" in the report (as it said)
    assert job.rate(job.started, job.started + 5.0) >= 0.85 * LIMIT / 60
    assert not job.limiter.share.shared
    assert job.limiter.share.others_pct == 0.0


@pytest.mark.parametrize("seed", range(8))
def test_a_job_started_beside_a_running_one_is_never_left_at_its_floor(seed: int) -> None:
    clock = VirtualClock()
    server = WindowLimit(LIMIT, window=1.0, clock=clock.now)
    jobs = make_jobs(clock, 2, told=False, calls=900)
    first, second = jobs
    on_clock(clock, lambda: run_jobs(clock, server, jobs, starts=[0.0, 15.0], jitter=random.Random(seed)))
    start, end = 20.0, first.finished - 1.0
    rates = first.rate(start, end), second.rate(start, end)
    # the newcomer cannot reconstruct the others' sends (it never saw the minute before it
    # came); reading "full" off its flawed count it drifted to its floor in 3 of these 8 runs
    # and got 1 call a second to the other's 14 until that one finished
    assert min(rates) >= 0.25 * max(rates)
    assert sum(rates) >= 0.85 * LIMIT / 60


def test_a_block_of_requests_a_ray_worker_leased_counts_as_our_own_calls() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(rpm=LIMIT, clock=clock)

    async def main() -> None:
        await limiter.acquire(0, requests=8)  # one lease of 8 for a worker's calls
        await clock.sleep(0.4)
        limiter.observe(RateLimitInfo(limit_requests=LIMIT, remaining_requests=LIMIT - 8))

    on_clock(clock, main)
    # the server counted our 8 calls: nobody else (counted as one, the other 7 seemed someone
    # else's and the first header set our share to 1/8; four Ray workers ran at half the limit)
    assert limiter.share.factor == 1.0
    assert not limiter.share.shared and limiter.share.others_pct == 0.0


@pytest.mark.parametrize("count", [2, 4])
def test_jobs_sharing_a_key_on_a_bucket_of_a_second_hold_it_with_few_429s(count: int) -> None:
    """Issue 23's third server model: a token bucket of one second's worth whose remaining
    headers give its level (they say nothing of the minute, so the window reconstruction
    cannot see the others). Each job reads the shared level and gives way while it is low:
    2 jobs drew 5.2% 429s and 4 jobs 16.9% on such a server before."""
    clock = VirtualClock()
    server = SecondBucket(LIMIT, seconds=1.0, clock=clock.now)
    jobs = make_jobs(clock, count, told=False, calls=300)
    on_clock(clock, lambda: run_jobs(clock, server, jobs, jitter=random.Random(7)))
    calls = sum(j.ok + j.refused for j in jobs)
    refused = sum(j.refused for j in jobs)
    assert all(j.ok == j.calls for j in jobs)
    # (issue 23's targets are 2% and 3%, measured by benchmarks/rate_limits.py --limiter second;
    # on this clock and jitter 4 jobs draw 3.1%, before the short-bucket control 18.5%)
    assert refused / calls <= (0.02 if count == 2 else 0.035), (refused, calls)
    end = max(j.finished for j in jobs)
    sends = [t for j in jobs for t in j.sends]
    steady = sum(1 for t in sends if 0.1 * end <= t < 0.9 * end) / (0.8 * end)
    assert steady >= 0.9 * LIMIT / 60
    rates = [j.calls / j.finished for j in jobs]
    assert max(rates) / min(rates) <= 2.0


#: issue 23's three server models, as ``chainfleet sim-server`` builds them: a bucket of a
#: minute's worth paced by one of two seconds (the default), a minute limit over 1-second
#: sliding windows (``--window 1``), a bucket of about a second (``--bucket-seconds 1``)
MODELS = {"minute": {}, "window": {"window": 1.0}, "second": {"bucket_seconds": 1.0}}


def server_model(model: str, clock: VirtualClock) -> TokenBucket:
    limits = RateLimits(LIMIT, None, clock=clock.now, **MODELS[model])  # type: ignore[arg-type]
    assert limits.requests is not None
    return limits.requests


def held(jobs: list[Job]) -> float:
    """The jobs' calls the server took in the middle 80% of the run, as a share of the limit
    (benchmarks/rate_limits.py's steady state)."""
    end = max(j.finished for j in jobs)
    sends = [t for j in jobs for t in j.sends]
    return sum(1 for t in sends if 0.1 * end <= t < 0.9 * end) / (0.8 * end) / (LIMIT / 60)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(("count", "most_429", "least_held"), [(2, 0.02, 0.92), (4, 0.03, 0.90)])
@pytest.mark.parametrize("told", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_jobs_sharing_a_key_hold_it_on_each_server_model_at_50_ms_a_call(
    model: str, count: int, most_429: float, least_held: float, told: bool, seed: int
) -> None:
    """Issue 23's targets, at 1,200/min and 50 ms a call (to 70 ms), 100 three-call chains a
    job, -c 50: 2 jobs <= 2% 429s and >= 92% of the limit; 4 jobs <= 3%, >= 90%, shares
    within 1.5x. On the minute model, whose level says the minute while a short bucket paces
    it, 2 and 4 jobs drew 7-18% 429s before its short reset was read as a short bucket."""
    clock = VirtualClock()
    server = server_model(model, clock)
    jobs = make_jobs(clock, count, told=told, calls=300)
    on_clock(
        clock, lambda: run_jobs(clock, server, jobs, latency=0.05, jitter=random.Random(seed), spread=0.02)
    )
    calls = sum(j.ok + j.refused for j in jobs)
    refused = sum(j.refused for j in jobs)
    assert all(j.ok == j.calls for j in jobs)
    assert refused / calls <= most_429, (refused, calls)
    assert held(jobs) >= least_held
    rates = [j.calls / j.finished for j in jobs]
    assert max(rates) / min(rates) <= 1.5


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("seed", [0, 1])
def test_a_cold_start_at_c_200_holds_each_server_model_without_a_burst(model: str, seed: int) -> None:
    """Issue 23's cold start: one job told nothing, 200 chains in flight from the first
    second, <= 1% 429s and >= 95% of the limit."""
    clock = VirtualClock()
    server = server_model(model, clock)
    [job] = make_jobs(clock, 1, told=False, calls=600)
    jitter = random.Random(seed)
    on_clock(
        clock, lambda: run_jobs(clock, server, [job], workers=200, latency=0.05, jitter=jitter, spread=0.02)
    )
    assert job.ok == 600
    assert job.refused / (job.ok + job.refused) <= 0.01
    assert held([job]) >= 0.95


@pytest.mark.parametrize("model", ["minute", "second"])
@pytest.mark.parametrize("count", [1, 2, 4])
def test_on_a_short_bucket_each_job_tells_how_much_of_the_key_others_took(model: str, count: int) -> None:
    """A short bucket's remaining says nothing of the minute, so the window's reconstruction
    cannot tell who else used the key: each job of 4 said others took 0%. What the server took
    between two headers is the bucket's refill plus what it lacks more; less our own calls,
    the others'."""
    clock = VirtualClock()
    server = server_model(model, clock)
    jobs = make_jobs(clock, count, told=False, calls=300)
    jitter = random.Random(3)
    on_clock(clock, lambda: run_jobs(clock, server, jobs, latency=0.05, jitter=jitter, spread=0.02))
    for job in jobs:
        pct = job.limiter.share.others_pct
        if count == 1:  # alone, the bucket seldom lacks a call: nothing to tell, or about 0
            assert (pct or 0.0) < 5.0
        else:
            assert pct == pytest.approx(100 * (count - 1) / count, abs=5.0)
        assert job.limiter.share.shared is (count > 1)


@pytest.mark.parametrize("model", ["minute", "second"])
@pytest.mark.parametrize("seed", range(3))
def test_on_a_short_bucket_a_job_that_joins_a_running_one_gets_a_fair_share(model: str, seed: int) -> None:
    """The running job gives way while the bucket is low, and does not grow straight back:
    before, a job that had never met a 429 counted an endless calm, took the whole key again
    after each give-way, and the newcomer was held to 1-2 calls a second of the 20 (spread
    9-14x) until the first one finished."""
    clock = VirtualClock()
    server = server_model(model, clock)
    jobs = make_jobs(clock, 2, told=False, calls=900)
    first, second = jobs
    on_clock(
        clock,
        lambda: run_jobs(
            clock, server, jobs, starts=[0.0, 15.0], latency=0.05, jitter=random.Random(seed), spread=0.02
        ),
    )
    start, end = 20.0, first.finished - 1.0
    assert end - start > 20.0
    rates = first.rate(start, end), second.rate(start, end)
    assert max(rates) / min(rates) <= 2.0, rates
    assert sum(rates) >= 0.9 * LIMIT / 60
    assert first.refused + second.refused <= 0.01 * (first.ok + second.ok)
