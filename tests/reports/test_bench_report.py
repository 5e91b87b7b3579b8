"""bench/report.py runs end to end on a tiny database, and its generated history is consistent."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench.report import History, main


def test_generated_tickets_end_in_the_status_their_last_status_event_names():
    history = History(total=2_000)
    rows = history.batch(2_000)
    last_status: dict[int, str] = {}
    for _id, kind, ticket_id, _actor, data, _at in rows.events:
        if kind == "StatusChanged":
            last_status[ticket_id] = json.loads(data)["to"]
    assert all(t[3] == last_status.get(t[0], "open") for t in rows.tickets)
    assert [e[5] for e in rows.events] == sorted(e[5] for e in rows.events)  # appended in time order
    assert Counter(e[1] for e in rows.events)["TicketOpened"] == 2_000


@pytest.mark.slow
def test_benchmark_prints_a_row_per_size(capsys):
    main(["--sizes", "400", "--runs", "1"])
    out = capsys.readouterr().out
    assert "sqlite: 400 tickets" in out
    assert out.splitlines()[-1].split()[:2] == ["sqlite", "400"]
