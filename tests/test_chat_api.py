"""`chat_api.ask_all`, what the teacher and the endpoints send their requests through: answers in the items' order,
and a failure raised at once, without waiting for the requests still in flight."""

import threading
import time

import pytest

from trainer.chat_api import ask_all


def test_answers_come_in_the_items_order_whatever_order_they_arrive_in():
    pauses = {"first": 0.3, "second": 0.0, "third": 0.1}

    def ask(item: str) -> str:
        time.sleep(pauses[item])
        return item.upper()

    assert ask_all(ask, list(pauses), 3, "asking") == ["FIRST", "SECOND", "THIRD"]
    assert ask_all(ask, [], 3, "asking") == []


def test_a_failure_is_raised_at_once_and_cancels_the_requests_not_yet_sent():
    in_flight = threading.Event()
    asked = []

    def ask(item: str) -> str:
        asked.append(item)
        if item == "slow":
            in_flight.wait(30)  # a request the server is slow to answer
        elif item == "refused":
            raise ValueError("HTTP 400: refused")
        else:
            time.sleep(0.5)
        return item

    items = ["slow", "refused", *(f"later {n}" for n in range(10))]
    start = time.monotonic()
    try:
        with pytest.raises(ValueError, match="HTTP 400: refused"):
            ask_all(ask, items, 2, "asking")
        assert time.monotonic() - start < 10  # not the 30 s the slow request would have held the error back
        assert len(asked) <= 3  # at most the one a free worker took before the failure was seen
    finally:
        in_flight.set()
