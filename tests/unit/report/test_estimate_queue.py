"""The "one at a time" figure on servers that queue, on virtual time (issue 24, item 4): the call
rows of a simulated N-slot server, checked against what the same items take one at a time on it.

- a one-slot server at -c 8 (calls made with 0 to 7 others in flight): within 20%, never 3.4x;
- a one-slot server at -c 3 with latency that varies like a small LLM's (6 items x 2 stages):
  within 20%, or uncertain with a range holding the measured one-at-a-time time;
- a handful of calls: a range and "uncertain", never "±0%";
- a rate limit that binds: one at a time is held by it too;
- a -c 1 run says it ran one at a time, not "1.00x: slower than one at a time"."""

from __future__ import annotations

import random

import pytest

from chainfleet.report.estimate import estimate_sequential
from chainfleet.report.model import RunReport
from chainfleet.store.runstore import CallRow
from unit.report.queue_sim import queue_run


def flat(base: float, jitter: float):  # type: ignore[no-untyped-def]
    return lambda rng, stage: base + rng.uniform(0, jitter)


def small_llm(rng: random.Random, stage: int) -> float:
    """SmolLM2 on 2 threads: a fixed part, then 20 ms a token for 4 to 40 tokens (max_tokens 40
    for the first stage, 30 for the second): latency varies about 2x from call to call."""
    return 0.15 + 0.02 * rng.randint(4, 40 if stage == 0 else 30)


@pytest.mark.parametrize("concurrency", [2, 4, 8])
def test_one_slot_server_estimate_is_within_20pct_at_every_concurrency(concurrency: int) -> None:
    for seed in range(3):
        run = queue_run(12, 3, concurrency, 1, flat(0.15, 0.01), gap=0.01, seed=seed)
        alone = queue_run(12, 3, 1, 1, flat(0.15, 0.01), gap=0.01, seed=seed + 100).wall
        estimate = estimate_sequential(run.rows)
        assert estimate.method == "few_in_flight", estimate.describe()
        assert estimate.seconds == pytest.approx(alone, rel=0.2), (seed, estimate.to_dict(), alone)
        assert estimate.observed_seconds > 1.5 * alone  # the plain sum would have been far off
        assert estimate.low_seconds is not None and estimate.high_seconds is not None
        assert estimate.low_seconds <= alone <= estimate.high_seconds, (estimate.to_dict(), alone)
        note = estimate.describe()
        assert "the server serves 1 at a time" in note or "the server serving 1 at a time at best fit" in note
        assert "±0%" not in note
        if estimate.uncertain:  # the few calls made alone cannot tell 1 slot from a few: a range
            assert "uncertain: between" in note and "chainfleet compare" in note


def test_eight_slots_at_32_in_flight() -> None:
    run = queue_run(32, 3, 32, 8, flat(0.1, 0.01), seed=3)
    alone = queue_run(32, 3, 1, 8, flat(0.1, 0.01), seed=4).wall
    estimate = estimate_sequential(run.rows)
    assert estimate.method == "few_in_flight"
    assert estimate.seconds == pytest.approx(alone, rel=0.2)
    assert estimate.slots is not None and estimate.slots[0] <= 8 <= estimate.slots[1]


def test_varying_latency_is_within_20pct_or_an_honest_range() -> None:
    confident, ranged = 0, 0
    for seed in range(12):
        run = queue_run(6, 2, 3, 1, small_llm, gap=0.005, seed=seed)
        alone = queue_run(6, 2, 1, 1, small_llm, gap=0.005, seed=seed + 1000).wall
        estimate = estimate_sequential(run.rows)
        low, high = estimate.low_seconds or 0.0, estimate.high_seconds or 0.0
        if estimate.uncertain:
            ranged += 1
            assert low <= alone <= high, (seed, estimate.to_dict(), alone)
            note = estimate.describe()
            assert "uncertain: between" in note and "chainfleet compare" in note
            assert estimate.error_pct is None
        else:
            confident += 1
            assert estimate.seconds == pytest.approx(alone, rel=0.2), (seed, estimate.to_dict(), alone)
        # never a confident figure far off, whatever the draw
        assert estimate.uncertain or 0.8 * alone <= estimate.seconds <= 1.2 * alone
    assert confident + ranged == 12


def test_a_handful_of_calls_gives_a_range_never_plus_minus_zero() -> None:
    run = queue_run(2, 2, 2, 1, flat(0.15, 0.0), seed=1)
    estimate = estimate_sequential(run.rows)
    assert estimate.uncertain
    assert estimate.error_pct is None
    note = estimate.describe()
    assert "only 4 calls succeeded" in note
    assert "±" not in note
    assert (estimate.low_seconds or 0) <= 0.6 <= (estimate.high_seconds or 0)


def test_a_single_call_is_uncertain() -> None:
    row = CallRow(0, "0", "a", 1, 0.0, 0.0, 0.4, "ok")
    estimate = estimate_sequential([row], servers={"a": "openai:llama"})
    assert estimate.uncertain and estimate.samples == 1
    assert "only 1 call succeeded" in estimate.describe()
    assert estimate.to_dict()["uncertain"] is True


def paced(calls: int, rpm: float, latency: float, concurrency: int) -> list[CallRow]:
    """Calls let out by a limiter at ``rpm`` (one every 60/rpm s) on a server that never queues."""
    gap = 60.0 / rpm
    rows = []
    for i in range(calls):
        sent = i * gap
        rows.append(
            CallRow(
                i,
                str(i),
                "w",
                1,
                max(0.0, sent - concurrency * gap),
                sent,
                sent + latency,
                "ok",
                input_tokens=50,
                output_tokens=50,
            )
        )
    return rows


def test_a_binding_request_limit_holds_one_at_a_time_too() -> None:
    rows = paced(120, rpm=240, latency=0.1, concurrency=8)  # 120 calls at 4/s: 30 s
    plain = estimate_sequential(rows, servers={"w": "openai:m"})
    assert plain.seconds == pytest.approx(12.0, rel=0.01)  # 120 x 0.1 s, the limits unknown
    held = estimate_sequential(
        rows, servers={"w": "openai:m"}, limits={"openai:m": {"rpm": 240, "tpm": None}}
    )
    assert held.seconds == pytest.approx(30.0, rel=0.01)
    assert held.floor_seconds == pytest.approx(30.0, rel=0.01)
    assert "the rate limit binds one at a time too: 120 calls at the 240/min" in held.describe()


def test_a_binding_token_limit_holds_one_at_a_time_too() -> None:
    rows = paced(100, rpm=500, latency=0.05, concurrency=4)  # 100 x 100 tokens
    held = estimate_sequential(
        rows, servers={"w": "openai:m"}, limits={"openai:m": {"rpm": 10_000, "tpm": 50_000}}
    )
    assert held.seconds == pytest.approx(60 * 10_000 / 50_000, rel=0.01)  # 12 s
    assert "10,000 tokens at the 50,000/min" in held.describe()


def test_a_limit_that_does_not_bind_changes_nothing() -> None:
    rows = paced(60, rpm=600, latency=1.0, concurrency=10)
    held = estimate_sequential(
        rows, servers={"w": "openai:m"}, limits={"openai:m": {"rpm": 600, "tpm": None}}
    )
    assert held.seconds == pytest.approx(60.0, rel=0.01)  # the calls' own time: more than 6 s
    assert "rate limit" not in held.describe()


def test_a_run_at_concurrency_1_says_it_ran_one_at_a_time() -> None:
    report = RunReport(
        run_id="r",
        pipeline="p",
        concurrency=1,
        stages_order=["a"],
        wall_seconds=10.0,
        sequential_seconds=9.9,
        items_total=1,
        items_succeeded=1,
    )
    text = "\n".join(report.summary_lines())
    assert "it ran one at a time" in text
    assert "slower than one at a time" not in text and "would take" not in text
    md = report.to_markdown()
    assert "it ran one at a time" in md and "slower than one at a time" not in md
    parallel = RunReport(
        run_id="r",
        pipeline="p",
        concurrency=4,
        stages_order=["a"],
        wall_seconds=10.0,
        sequential_seconds=9.9,
        items_total=1,
        items_succeeded=1,
    )
    assert "0.99x: slower than one at a time" in "\n".join(parallel.summary_lines())


def test_calls_of_no_duration_and_out_of_order_rows_are_counted() -> None:
    rows = [CallRow(i, str(i), "a", 1, 0.0, 0.0, 0.0, "ok") for i in range(6)]
    rows += [CallRow(9, "9", "a", 1, 2.0, 2.0, 2.5, "ok"), CallRow(8, "8", "a", 1, 1.0, 1.0, 1.5, "ok")]
    estimate = estimate_sequential(rows)
    assert estimate.seconds == pytest.approx(1.0)
    assert estimate.peak_in_flight >= 1


def test_a_job_sharing_a_key_is_held_to_its_share_one_at_a_time_too() -> None:
    """Four jobs on one key of 1,200/min: each held about 300/min. One at a time, this job would
    still share the key, so the figure is at least its calls at its share, never a claimed 3x
    speed-up from summing 50 ms latencies (the issue's "each claimed 0.30-0.37x")."""
    from chainfleet.report.build import limits_in_force

    rows = paced(150, rpm=300, latency=0.05, concurrency=10)  # 150 calls at 5/s: 30 s
    facts = {"openai:m": {"told": {"rpm": None}, "held": {"rpm": 300, "tpm": None}, "share": 0.25}}
    held = estimate_sequential(rows, servers={"w": "openai:m"}, limits=limits_in_force(facts))
    assert held.seconds == pytest.approx(30.0, rel=0.01)  # not 150 x 0.05 s = 7.5 s
    assert "150 calls at the 300/min" in held.describe()


def test_a_shared_key_counts_what_the_others_left_over_the_run() -> None:
    """The share a job reached at its end (the others done) overstates what it had while they
    ran: the figure uses what the others left (a run of four jobs: 76.6% taken by the others)."""
    from chainfleet.report.build import limits_in_force

    facts = {
        "held": {"rpm": 408.4, "tpm": None},
        "rpm_limit": 1176.0,
        "tpm_limit": None,
        "shared": True,
        "others_pct": 76.6,
    }
    rows = paced(200, rpm=279, latency=0.05, concurrency=10)  # 200 calls at the rate they got
    held = estimate_sequential(rows, servers={"w": "openai:m"}, limits=limits_in_force({"openai:m": facts}))
    assert held.seconds == pytest.approx(200 / (1176 * 0.234) * 60, rel=0.01)  # about 43.6 s
    alone = limits_in_force({"openai:m": {**facts, "shared": False}})
    assert alone["openai:m"]["rpm"] == 408.4  # not shared: the held rate as before


def test_the_fit_score_is_the_plain_formula_to_the_last_bit() -> None:
    """The score looks each level's weight up (issue 25): the very floats of the formula
    written out call by call, so a stored estimate never moves."""
    import math

    from chainfleet.report import queueing

    def plain(logs: list[float], levels: list[int], slots: int) -> float:
        weights = [1.0 + max(0, j + 1 - slots) / slots for j in levels]
        shifted = [y - math.log(q) for y, q in zip(logs, weights, strict=True)]
        mean = math.fsum(w * x for w, x in zip(weights, shifted, strict=True)) / math.fsum(weights)
        sse = math.fsum(w * (x - mean) ** 2 for w, x in zip(weights, shifted, strict=True))
        return len(logs) * math.log(max(sse / len(logs), 1e-12)) - math.fsum(math.log(w) for w in weights)

    rng = random.Random(7)
    for calls, spread in [(30, 3), (800, 40), (4000, 600)]:
        levels = [rng.randrange(spread) for _ in range(calls)]
        logs = [rng.gauss(0.0, 1.0) for _ in range(calls)]
        for slots in (1, 2, 7, 32, 100, 500):
            assert queueing._score(logs, levels, slots) == plain(logs, levels, slots)
