"""strip_reply: what the sender wrote now, without quoted history or signature."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

import pytest

from mail_gateway.quotes import REPLY_MARKER, strip_reply

NEW = "Thanks, that worked.\n\nBest,\nMaria"


def test_text_above_our_marker_is_the_reply() -> None:
    text = f"{NEW}\n\n{REPLY_MARKER}\nHello Maria,\nwe fixed it.\n"
    assert strip_reply(text) == NEW


def test_quoted_marker_with_attribution_above_it_leaves_only_the_reply() -> None:
    attribution = "On Mon, Jan 5, 2026 at 10:15 AM Support <s@x.test> wrote:"
    text = f"{NEW}\n\n{attribution}\n> {REPLY_MARKER}\n> Hi\n"
    assert strip_reply(text) == NEW


@pytest.mark.parametrize(
    "attribution",
    [
        "On Mon, Jan 5, 2026 at 10:15 AM Acme Support <support@help.acme.test> wrote:",
        "On Mon, Jan 5, 2026 at 10:15\u202fAM Acme Support <support+t1.abc@help.acme.test>\nwrote:",
        "On Mon, Jan 5, 2026 at 10:15 AM Acme Support\n<support@help.acme.test> wrote:",
        "On 3 Jan 2026, at 10:00, Acme Support <support@help.acme.test> wrote:",
        "On 1/3/26 10:00, Acme Support wrote:",
        "Le lun. 5 janv. 2026 à 10:15, Acme Support <support@help.acme.test> a écrit :",
        "Le lun. 5 janv. 2026 à 10:15, Acme Support <support@help.acme.test> a\nécrit\u00a0:",
        "Am Mo., 5. Jan. 2026 um 10:15 Uhr schrieb Acme Support <support@help.acme.test>:",
        "Am 05.01.2026 um 10:15 schrieb Acme Support:",
        "El lun, 5 ene 2026 a las 10:15, Acme Support (<support@help.acme.test>) escribió:",
        "Op ma 5 jan. 2026 om 10:15 schreef Acme Support <support@help.acme.test>:",
        "Il giorno lun 5 gen 2026 alle ore 10:15 Acme Support ha scritto:",
        "Em seg., 5 de jan. de 2026 às 10:15, Acme Support escreveu:",
    ],
)
def test_attribution_lines_start_the_quoted_history(attribution: str) -> None:
    text = f"{NEW}\n\n{attribution}\n\n> old text\n> more old text\n"
    assert strip_reply(text) == NEW


def test_original_message_separator_starts_the_history() -> None:
    text = f"{NEW}\n\n-----Original Message-----\nFrom: Support\nSent: today\n\nold text\n"
    assert strip_reply(text) == NEW


def test_outlook_header_block_starts_the_history() -> None:
    text = (
        f"{NEW}\n\nFrom: Acme Support <support@help.acme.test>\n"
        "Sent: Monday, January 5, 2026 10:15 AM\nTo: Maria <maria@example.org>\n"
        "Subject: Re: [#1234] VAT\n\nold text\n"
    )
    assert strip_reply(text) == NEW


def test_outlook_web_underscore_line_goes_with_the_header_block() -> None:
    text = (
        f"{NEW}\n\n________________________________\nFrom: Acme Support <support@help.acme.test>\n"
        "Sent: Tuesday, January 6, 2026 09:12\nTo: Maria\nSubject: Re: [#1234] VAT\n\nold text\n"
    )
    assert strip_reply(text) == NEW


def test_localized_and_bold_outlook_header_blocks_start_the_history() -> None:
    french = (
        f"{NEW}\n\nDe : Acme Support\nEnvoyé : lundi 5 janvier 2026 10:15\nÀ : Maria\n"
        "Objet : RE: VAT\n\nold"
    )
    bold = f"{NEW}\n\n*From:* Acme Support\n*Sent:* Monday, January 5, 2026\n*To:* Maria\n\nold"
    assert strip_reply(french) == NEW
    assert strip_reply(bold) == NEW


def test_a_single_from_line_in_prose_is_not_a_header_block() -> None:
    text = "The error comes\nFrom: the billing page\nwhen I click save.\n"
    assert strip_reply(text) == text.strip()


def test_prose_starting_with_on_is_not_an_attribution() -> None:
    text = "On reflection, the installer wrote:\nC:\\temp is full\n"
    assert strip_reply(text) == text.strip()


def test_trailing_quote_block_is_dropped() -> None:
    assert strip_reply(f"{NEW}\n\n> old text\n>\n> more\n\n") == NEW


def test_inline_quotes_followed_by_answers_are_kept() -> None:
    text = "> Which browser?\nFirefox 134.\n> Which OS?\nDebian."
    assert strip_reply(text) == text


def test_signature_delimiter_cuts_the_signature() -> None:
    assert strip_reply(f"{NEW}\n\n-- \nMaria Lopez\nACME Corp\n+1 555 0100\n") == NEW


@pytest.mark.parametrize(
    "signature",
    [
        "Sent from my iPhone",
        "Sent from my Galaxy",
        "Envoyé de mon iPhone",
        "Von meinem iPhone gesendet",
        "Enviado desde mi iPhone",
        "Get Outlook for iOS",
        "Get Outlook for Android",
    ],
)
def test_mobile_signatures_are_cut(signature: str) -> None:
    assert strip_reply(f"{NEW}\n\n{signature}\n") == NEW


def test_forward_without_comment_returns_the_whole_text() -> None:
    text = (
        "---------- Forwarded message ---------\nFrom: Karl <k@example.at>\nDate: Sun\n\n"
        "The parcel is late.\n"
    )
    assert strip_reply(text) == text.strip()


def test_forward_with_comment_returns_the_comment() -> None:
    text = "Please handle this.\n\nBegin forwarded message:\n\nFrom: Karl\n\nThe parcel is late.\n"
    assert strip_reply(text) == "Please handle this."


def test_reply_written_below_the_quote_returns_the_whole_text() -> None:
    text = "On Mon, Jan 5, 2026 at 10:15 AM Support wrote:\n> Does it work now?\n\nYes, it does.\n"
    assert strip_reply(text) == text.strip()


def test_windows_and_old_mac_line_endings_are_normalized() -> None:
    assert strip_reply(f"{NEW}\r\n\r\n> old\r\n".replace("\n\n", "\r\n\r\n")) == NEW
    assert strip_reply("Yes.\r\rOn 1/3/26 10:00, X wrote:\r> q\r") == "Yes."


def test_empty_and_blank_text_give_empty_reply() -> None:
    assert strip_reply("") == ""
    assert strip_reply(" \n\n ") == ""


def test_hostile_text_is_bounded() -> None:
    lines = "On a line of text 1\n" * 500_000 + "-" * 2_000_000 + "\n" + "Am 1 " + " schrieb" * 60
    started = time.perf_counter()
    strip_reply(lines)
    assert time.perf_counter() - started < 5


# --- memory: a huge text is not split into a list of lines ----------------------------------------


def _traced_peak(function: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "text",
    [
        "ab\n" * 1_000_000 + "ab",  # a 3 MB reply of 3-byte lines: it was 48 MB of line objects
        "Thanks!\n\nOn Mon, 5 Jan 2026 at 10:15, Bob <bob@example.org> wrote:\n" + "> a\n" * 750_000 + "> a",
        "> a\n" * 750_000 + "> a",  # all quoted, no attribution: the whole text comes back
        "a\n\n" * 500_000 + REPLY_MARKER + "\n> ours\n",
    ],
    ids=["short-lines", "attribution-then-history", "all-quoted", "marker-at-the-end"],
)
def test_a_text_of_a_million_lines_costs_at_most_a_copy_of_it(text: str) -> None:
    new = strip_reply(text)
    assert _traced_peak(lambda: strip_reply(text)) < 1.2 * len(text)
    assert new.startswith(("ab\nab", "Thanks!", "> a", "a\n\na"))


def test_an_unchanged_text_comes_back_as_the_same_string() -> None:
    # ParsedMail keeps text and new_text; when they are equal they are one object (one pickle).
    text = "ab\n" * 1_000 + "ab"
    assert strip_reply(text) is text
