"""The signing key (reply tokens) on first start: created atomically, agreed on by racing starters."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from core.errors import UserError
from supportbot.app import desk_secret
from supportbot.config import Config

PROCESSES = 2
TRIALS = 100


def config_for(data_dir: Path, secret: str = "") -> Config:
    defaults = Config()
    return defaults.model_copy(update={
        "desk": defaults.desk.model_copy(update={"data_dir": data_dir}),
        "mail": defaults.mail.model_copy(update={"secret": secret})})


def _starter(base: str, trials: int, barrier: Any, results: Any) -> None:
    """One process: for every trial, wait for the others, then all call desk_secret on the same fresh folder."""
    for trial in range(trials):
        barrier.wait()
        try:
            outcome = ("key", desk_secret(config_for(Path(base) / f"trial-{trial}")).decode())
        except Exception as e:  # a crash of `supportbot run` at start
            outcome = ("crash", f"{type(e).__name__}: {e}")
        results.put((trial, outcome))


def test_processes_starting_together_on_a_fresh_data_dir_agree_on_one_complete_key(tmp_path):
    context = multiprocessing.get_context("spawn")  # real, separate interpreters
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    starters = [context.Process(target=_starter, args=(str(tmp_path), TRIALS, barrier, results))
                for _ in range(PROCESSES)]
    for process in starters:
        process.start()
    outcomes: dict[int, list[tuple[str, str]]] = {}
    try:
        for _ in range(PROCESSES * TRIALS):
            trial, outcome = results.get(timeout=120)
            outcomes.setdefault(trial, []).append(outcome)
    finally:
        for process in starters:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in starters)

    crashes = [o for got in outcomes.values() for o in got if o[0] == "crash"]
    empty = [o for got in outcomes.values() for o in got if o == ("key", "")]
    disagreeing = [t for t, got in outcomes.items() if len({key for _, key in got}) != 1]
    assert (len(outcomes), crashes, empty, disagreeing) == (TRIALS, [], [], [])
    for trial, got in outcomes.items():
        folder = tmp_path / f"trial-{trial}"
        assert len(got[0][1]) == 64
        assert (folder / "secret.key").read_text() == got[0][1]  # what they use is what is kept
        assert stat.S_IMODE((folder / "secret.key").stat().st_mode) == 0o600
        assert sorted(p.name for p in folder.iterdir()) == ["secret.key"]  # no temporary file left


def test_the_key_is_generated_once_and_read_back(tmp_path):
    first = desk_secret(config_for(tmp_path / "data"))
    assert len(first) == 64 and desk_secret(config_for(tmp_path / "data")) == first
    assert stat.S_IMODE((tmp_path / "data" / "secret.key").stat().st_mode) == 0o600


def test_a_configured_secret_wins_and_writes_no_file(tmp_path):
    assert desk_secret(config_for(tmp_path, secret="from-the-environment")) == b"from-the-environment"
    assert not (tmp_path / "secret.key").exists()


def test_a_starter_that_loses_the_race_reads_the_winners_key_and_removes_its_temporary_file(tmp_path, monkeypatch):
    winner = b"w" * 64
    real_link = os.link

    def another_process_got_there_first(source: Any, target: Any) -> None:
        Path(target).write_bytes(winner)
        real_link(source, target)  # FileExistsError, as for the second of two starters

    monkeypatch.setattr(os, "link", another_process_got_there_first)
    assert desk_secret(config_for(tmp_path)) == winner
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


@pytest.mark.parametrize(("content", "said"), [(b"", "is empty"), (b"\n", "is empty"),
                                               (b"abc123\n", "too short (6 characters)")])
def test_an_empty_or_short_key_file_stops_the_start_naming_the_file(tmp_path, content, said):
    (tmp_path / "secret.key").write_bytes(content)
    with pytest.raises(UserError) as error:
        desk_secret(config_for(tmp_path))
    assert str(tmp_path / "secret.key") in str(error.value) and said in str(error.value)
    assert (tmp_path / "secret.key").read_bytes() == content  # left for the operator to look at


def test_a_key_file_written_by_an_earlier_version_is_used_as_it_is(tmp_path):
    (tmp_path / "secret.key").write_text("ab" * 32)  # token_hex(32), no newline
    assert desk_secret(config_for(tmp_path)) == b"ab" * 32
