"""bench/discord.py runs end to end on a handful of mails and prints every figure it promises."""

from __future__ import annotations

import pytest

from bench.discord import bench

pytestmark = pytest.mark.slow


async def test_discord_bench_measures_mail_to_post_and_reply_to_relay(capsys):
    await bench(mails=3, replies=1, rate=0)
    out = capsys.readouterr().out
    rows = {line[:36].strip(): line[36:].split() for line in out.splitlines()[4:] if line.strip()}
    assert set(rows) == {"SMTP DATA -> forum post request", "of which DATA -> ticket committed",
                         "of which ticket committed -> post", "baseline: SMTP DATA -> 250", "/reply -> relay 250",
                         "baseline: /reply -> bot's answer"}, out
    assert rows["SMTP DATA -> forum post request"][0] == "3" and rows["/reply -> relay 250"][0] == "1"
    assert all(float(v) > 0 for figures in rows.values() for v in figures[1:]), out
    assert "routes the fake did not know" not in out
