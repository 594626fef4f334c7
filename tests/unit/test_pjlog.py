"""PJSIP's error lines share a budget and are cut short: junk from the network cannot flood the log."""

from __future__ import annotations

import threading

from bridge.sip.pjlog import LineBudget, shorten


def test_budget_allows_a_burst_then_a_rate_and_counts_the_rest() -> None:
    budget = LineBudget(per_second=1.0, burst=3)
    assert [budget.take(0.0)[0] for _ in range(5)] == [True, True, True, False, False]
    assert budget.take(0.5) == (False, 0)
    assert budget.take(1.0) == (True, 3)  # one token back after a second; three were left out
    assert budget.dropped_total == 3


def test_budget_is_thread_safe() -> None:
    budget = LineBudget(per_second=0.0, burst=100)
    allowed: list[bool] = []

    def hammer() -> None:
        for _ in range(1000):
            allowed.append(budget.take(0.0)[0])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100 and budget.dropped_total == 3900


def test_shorten() -> None:
    assert shorten("short\n") == "short"
    long = "B" * 5000
    cut = shorten(long)
    assert len(cut) < 450 and cut.endswith("(5000 characters)")
