"""The mail we build: headers, MIME structure, subjects, hostile input, DKIM."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

import pytest

from core.mail_drafts import Draft, FileAttachment, Recipient
from core.tokens import FOOTER_TOKEN, Signer
from mail_gateway.outbound.compose import REPLY_MARKER, text_to_html
from mail_gateway.outbound.headers import (
    clean_display_name,
    clean_text,
    reply_subject,
    trim_references,
)
from tests.outbound.conftest import SECRET, SUPPORT, make_composer

WHEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def draft(**overrides: object) -> Draft:
    body = "Unplug it.\n\nThen call us."
    values: dict[str, object] = {
        "template": "reply", "ticket_number": 1042, "ticket_ref": "#1042", "ticket_subject": "Printer on fire",
        "message_key": "m7", "to": [Recipient("alice@example.org", "Alice Liddell")], "date": WHEN,
        "automatic": False,
        "context": {"body_text": body, "body_html": text_to_html(body), "staff_name": "Bob", "attachments": []}}
    values.update(overrides)
    return Draft(**values)  # type: ignore[arg-type]


def parse(content: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(content, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def header_lines(content: bytes) -> list[str]:
    head = content.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line for line in head.split("\r\n") if line and not line[0].isspace()]


def test_reply_has_threading_and_identity_headers() -> None:
    composed = make_composer().compose(draft(in_reply_to="<c1@example.org>",
                                             references=["<c0@example.org>", "<c1@example.org>"]))
    msg = parse(composed.content)
    assert msg["From"] == "Example Support <support@example.test>"
    assert msg["To"] == "Alice Liddell <alice@example.org>"
    assert msg["Subject"] == "Re: [#1042] Printer on fire"
    assert msg["In-Reply-To"] == "<c1@example.org>"
    assert msg["References"] == "<c0@example.org> <c1@example.org>"
    assert msg["Message-ID"] == composed.message_id
    assert msg["X-Loop"] == SUPPORT
    assert msg["Date"] == "Mon, 02 Mar 2026 09:00:00 +0000"
    # A staff reply is written by a person: no auto-reply markers.
    assert msg["Auto-Submitted"] is None and msg["X-Auto-Response-Suppress"] is None


def test_message_id_and_reply_address_carry_verifiable_signatures() -> None:
    composed = make_composer().compose(draft())
    msg = parse(composed.content)
    signer = Signer(SECRET, "example.test")
    assert signer.ticket_from_message_id(msg["Message-ID"]) == 1042
    reply_to = msg["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith("support+1042-") and signer.ticket_from_address(reply_to) == 1042
    other = Signer(b"another desk", "example.test")
    assert other.ticket_from_message_id(msg["Message-ID"]) is None
    assert other.ticket_from_address(reply_to) is None


def test_message_id_is_the_same_for_the_same_message_key() -> None:
    composer = make_composer()
    assert composer.compose(draft()).message_id == composer.compose(draft()).message_id
    assert composer.compose(draft()).message_id != composer.compose(draft(message_key="m8")).message_id


def test_automatic_mail_is_marked_so_auto_responders_stay_quiet() -> None:
    msg = parse(make_composer().compose(draft(
        template="acknowledgement", automatic=True,
        context={"summary": "Help", "response_expectation": "Soon."})).content)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["X-Loop"] == SUPPORT


def test_body_is_multipart_alternative_with_the_same_text_in_both_parts() -> None:
    msg = parse(make_composer().compose(draft()).content)
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None and rich is not None
    text, html = plain.get_content(), rich.get_content()
    for part in (text, html):
        assert "Unplug it." in part and "Then call us." in part and "Bob" in part
        assert REPLY_MARKER in part
    assert text.index(REPLY_MARKER) < text.index("Unplug it.")
    assert "<p" in html and "<p" not in text
    assert not re.search(r"""src=["']?https?:""", html), "no remote images"


def test_token_is_hidden_in_the_footer_of_both_parts() -> None:
    msg = parse(make_composer().compose(draft()).content)
    token = Signer(SECRET, "example.test").ticket_token(1042)
    for kind in ("plain", "html"):
        part = msg.get_body((kind,))
        assert part is not None
        found = FOOTER_TOKEN.search(part.get_content())
        assert found and found.group(1) == token


def test_attachments_make_it_multipart_mixed_with_the_bytes_intact() -> None:
    pdf = b"%PDF-1.4 " + bytes(range(256)) * 40
    msg = parse(make_composer().compose(draft(attachments=[
        FileAttachment("manual.pdf", "application/pdf", pdf),
        FileAttachment("notes.txt", "text/plain", "grüße\n".encode()),
    ])).content)
    assert msg.get_content_type() == "multipart/mixed"
    parts = list(msg.iter_parts())
    assert parts[0].get_content_type() == "multipart/alternative"
    files = {a.get_filename(): a for a in msg.iter_attachments()}
    assert set(files) == {"manual.pdf", "notes.txt"}
    assert files["manual.pdf"].get_content_type() == "application/pdf"
    assert files["manual.pdf"].get_payload(decode=True) == pdf
    assert files["notes.txt"].get_payload(decode=True) == "grüße\n".encode()


@pytest.mark.parametrize("original", [
    "Printer on fire", "Re: Printer on fire", "RE: Re: re: Printer on fire", "AW: Re: Printer on fire",
    "Fwd: Printer on fire", "Re: [#1042] Printer on fire", "Re: [#1042] Re: [#1042] Printer on fire",
    "SV: Antw: WG: Printer on fire", "Re[2]: Printer on fire", "  Re:Printer   on fire ",
])
def test_subject_has_one_prefix_and_one_tag_however_many_it_had(original: str) -> None:
    assert reply_subject(original, "#1042") == "Re: [#1042] Printer on fire"


def test_subject_tag_with_a_custom_ticket_prefix_is_not_repeated() -> None:
    assert reply_subject("Re: [T-42] Re: [T-42] Login", "T-42") == "Re: [T-42] Login"


def test_subject_keeps_words_that_only_look_like_prefixes() -> None:
    assert reply_subject("Regarding invoices", "#7") == "Re: [#7] Regarding invoices"
    assert reply_subject("", "#7") == "Re: [#7] (no subject)"


HOSTILE = [
    "Hello\r\nBcc: victim@example.net",
    "Hello\nBcc: victim@example.net",
    "Hello\rBcc: victim@example.net",
    "=?utf-8?q?Hello=0D=0ABcc:_victim@example.net?=",
    "=?utf-8?b?SGVsbG8NCkJjYzogdmljdGltQGV4YW1wbGUubmV0?=",
    "=?utf-8?q?=3D=3Futf-8=3Fq=3FHi=3D0D=3D0ABcc:_victim@example.net=3F=3D?=",  # encoded twice
    "Hello\u2028Bcc: victim@example.net",
    "Hello\x00\x0bBcc: victim@example.net",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_subject_and_names_cannot_add_headers(hostile: str) -> None:
    composed = make_composer(from_name=hostile).compose(draft(
        ticket_subject=hostile, to=[Recipient("alice@example.org", hostile)],
        attachments=[FileAttachment(hostile + ".txt", "text/plain", b"x")]))
    head = composed.content.split(b"\r\n\r\n", 1)[0]
    assert b"\r\n\r\n" not in head and b"\n\n" not in head
    names = [line.split(":", 1)[0].lower() for line in header_lines(composed.content)]
    assert "bcc" not in names
    assert len(names) == len(set(names)), names
    msg = parse(composed.content)
    assert msg["Bcc"] is None
    for name in ("Subject", "From", "To"):
        value = str(msg[name])
        assert "\r" not in value and "\n" not in value, (name, value)
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@example.org"]
    assert composed.recipients == ["alice@example.org"]


def test_clean_text_keeps_ordinary_unicode() -> None:
    assert clean_text("Grüße aus Köln 👩‍💻") == "Grüße aus Köln 👩‍💻"
    assert clean_display_name('Eve "Admin" <root@x>, Bob') == "Eve Admin root x Bob"


def test_non_ascii_names_and_subjects_are_encoded_words_on_the_wire() -> None:
    composed = make_composer().compose(draft(ticket_subject="Grüße – Drucker brennt",
                                             to=[Recipient("a@example.org", "Jörg Müller")]))
    composed.content.decode("ascii")  # 7-bit headers and bodies
    msg = parse(composed.content)
    assert msg["Subject"] == "Re: [#1042] Grüße – Drucker brennt"
    assert msg["To"].addresses[0].display_name == "Jörg Müller"


def test_addresses_that_are_not_plain_are_never_used() -> None:
    composed = make_composer().compose(draft(to=[Recipient("alice@example.org"),
                                                 Recipient("x@example.org>, evil@example.net")]))
    assert composed.recipients == ["alice@example.org"]


def test_references_are_trimmed_keeping_the_first_and_the_newest() -> None:
    chain = [f"<m{i}@example.org>" for i in range(30)]
    trimmed = trim_references(chain)
    assert len(trimmed) == 10 and trimmed[0] == chain[0] and trimmed[-9:] == chain[-9:]
    msg = parse(make_composer().compose(draft(references=chain, in_reply_to=chain[-1])).content)
    assert msg["References"].split() == trimmed


def test_dkim_signature_verifies_with_the_published_key() -> None:
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mail_gateway.outbound.compose import DkimKey

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail._domainkey.example.test."
        return record

    composed = make_composer(dkim_key=DkimKey("mail", "example.test", private)).compose(draft())
    assert composed.content.startswith(b"DKIM-Signature:")
    assert dkim.verify(composed.content, dnsfunc=dns)
    assert not dkim.verify(composed.content.replace(b"Unplug", b"Replug"), dnsfunc=dns)
