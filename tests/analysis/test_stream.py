"""run_all: several tensors streamed at once, results in plan order, clean stops."""

from __future__ import annotations

import threading
import time

import pytest

from dora_diag.analysis.stream import Cancelled, run_all
from dora_diag.errors import InputError


class FakeStreamer:
    """Stands in for a Streamer: ``run`` answers by plan name, checks ``cancel`` like one."""

    def __init__(self):
        self.cancel = threading.Event()
        self.threads = set()

    def run(self, plan):
        self.threads.add(threading.get_ident())
        if plan == "bad":
            raise InputError("bad tensor")
        if plan == "endless":   # stops only when cancelled, as a real one does at its next block
            while not self.cancel.wait(0.001):
                pass
            raise Cancelled
        time.sleep(0.01 if plan == "slow" else 0)
        return [plan]


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_results_come_in_plan_order(streams):
    streamers = [FakeStreamer() for _ in range(streams)]
    plans = ["slow", "a", "b", "slow", "c"]
    assert list(run_all(plans, streamers)) == [[p] for p in plans]
    if streams > 1:
        assert len(set().union(*(s.threads for s in streamers))) > 1


def test_an_error_stops_the_other_streams():
    streamers = [FakeStreamer(), FakeStreamer()]
    started = time.monotonic()
    with pytest.raises(InputError, match="bad tensor"):
        list(run_all(["a", "bad", "endless", "b"], streamers))
    assert all(s.cancel.is_set() for s in streamers)
    assert time.monotonic() - started < 5


def test_closing_early_stops_the_other_streams():
    streamers = [FakeStreamer(), FakeStreamer()]
    results = run_all(["a", "endless", "b"], streamers)
    assert next(results) == ["a"]
    results.close()   # the caller stopped (Ctrl-C in the main thread)
    assert all(s.cancel.is_set() for s in streamers)
