"""Text is split and cut within Discord's limits without losing or repeating anything."""

from __future__ import annotations

import pytest

from bot.format import CHUNK, split_text, thread_name, truncate


@pytest.mark.parametrize("text", [
    "", "short", "x" * 10_000, ("para one. " * 300 + "\n\n") * 5, ("line\n" * 3000), "ü€𝄞" * 4000,
], ids=["empty", "short", "10k-no-breaks", "paragraphs", "lines", "non-ascii"])
def test_split_text_keeps_every_character_in_chunks_within_the_limit(text):
    chunks = split_text(text)
    assert "".join(chunks) == text
    assert all(len(c) <= CHUNK for c in chunks)
    assert all(chunks) or chunks == [""]


def test_split_text_cuts_at_paragraphs_before_lines_before_words():
    paragraphs = "a" * 2500 + "\n\n" + "b" * 1000 + "\n" + "c" * 1000
    assert split_text(paragraphs)[0] == "a" * 2500 + "\n\n"
    lines = "a" * 2500 + "\n" + "b" * 1000 + " " + "c" * 1000
    assert split_text(lines)[0] == "a" * 2500 + "\n"
    words = "word " * 1000
    assert all(c.endswith(" ") for c in split_text(words)[:-1])


def test_thread_name_is_tag_and_subject_within_100_characters():
    assert thread_name("#1234", "Invoice   missing\n again") == "[#1234] Invoice missing again"
    long = thread_name("#1", "s" * 300)
    assert len(long) == 100 and long.endswith("…")
    assert truncate("abc", 3) == "abc" and truncate("abcd", 3) == "ab…"
