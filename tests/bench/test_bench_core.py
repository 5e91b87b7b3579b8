"""The core benchmark runs end to end on a tiny database, and its helpers compute what they say."""

from __future__ import annotations

import pytest

from bench import _core_data as data
from bench._util import peak_rss_mib, percentile, print_table, rss_mib
from bench.core import main


def test_percentile_interpolates_between_closest_ranks():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0, 1.0, 3.0], 100) == 5.0
    assert percentile([7.0], 95) == 7.0


def test_memory_figures_come_from_proc_and_peak_is_not_below_current():
    assert 1 < rss_mib() <= peak_rss_mib()


def test_table_aligns_columns_and_right_aligns_numbers(capsys):
    print_table(["name", "n"], [["a", 1_000], ["bbb", 5]])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["name      n", "----  -----", "a     1,000", "bbb       5"]


def test_generated_text_follows_zipf_and_rare_words_really_occur():
    corpus = data.Corpus(seed=3)
    gen = data.Generator(corpus, messages_per_ticket=5)
    batch = gen.batch(5_000)
    words = " ".join(m[4].lower() for m in batch.messages).split()
    assert words.count("the") > 10 * words.count("order") > 0  # rank 1 far above rank 47
    text = " ".join(words + [t[2].lower() for t in batch.tickets])  # subjects hold some rare words too
    assert corpus.rare_words() and all(w in text for w in corpus.rare_words())
    assert not any(w in text for w in corpus.missing_words(20))
    assert [m[-1] for m in batch.messages] == sorted(m[-1] for m in batch.messages)


@pytest.mark.slow
def test_benchmark_prints_every_section_for_a_tiny_database(capsys, tmp_path):
    assert main(["--messages", "300,600", "--calls", "6", "--concurrency", "2", "--queries", "3",
                 "--baseline-queries", "2", "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for heading in ("1. Service calls", "2a. Filling", "2b. search_tickets", "3. Memory"):
        assert heading in out
    assert "open_ticket" in out and "reply" in out
    search_rows = [line for line in out.splitlines() if line.startswith("sqlite") and "ms" not in line
                   and ("common" in line or "rare" in line or "missing" in line)]
    assert len(search_rows) == 12  # 2 sizes x 3 kinds x 2 filters
    assert (tmp_path / "search.db").exists()


def test_bad_sizes_are_refused_with_a_message(capsys):
    with pytest.raises(SystemExit):
        main(["--messages", "ten"])
    assert "--messages takes comma-separated numbers" in capsys.readouterr().err
