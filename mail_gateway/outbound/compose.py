"""Build the RFC 5322 mail we send: text + HTML from one template, threading headers, attachments."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jinja2
import nh3
from markupsafe import Markup

from core.mail_drafts import Composed, Draft, Recipient
from core.message_ids import bracketed
from core.tokens import Signer
from mail_gateway.outbound.headers import (
    clean_display_name,
    clean_text,
    reply_subject,
    trim_references,
)

# The parsing side cuts customer replies at this marker: one string for both directions.
from mail_gateway.quotes import REPLY_MARKER

_SIMPLE_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$")
_HTML_TAGS = {"a", "b", "blockquote", "br", "code", "em", "i", "li", "ol", "p", "pre", "strong", "u", "ul"}
DKIM_HEADERS = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                b"in-reply-to", b"references", b"mime-version", b"content-type"]


@dataclass(frozen=True)
class DkimKey:
    selector: str
    domain: str
    private_key: bytes

    @classmethod
    def load(cls, selector: str, domain: str, path: Path) -> DkimKey:
        return cls(selector, domain, path.read_bytes())


class Composer:
    """Renders and assembles mail as the desk; knows our address, name, signing key and templates."""

    def __init__(self, *, signer: Signer, support_address: str, desk_name: str, from_name: str,
                 templates: jinja2.Environment, dkim_key: DkimKey | None = None) -> None:
        self.signer = signer
        self.support_address = support_address
        self.desk_name = clean_display_name(desk_name) or "Support"
        self.from_name = clean_display_name(from_name) or self.desk_name
        self.templates = templates
        self.dkim_key = dkim_key

    def compose(self, draft: Draft) -> Composed:
        to = [r for r in draft.to if is_simple_address(r.email)]
        cc = [r for r in draft.cc if is_simple_address(r.email) and r.email not in {t.email for t in to}]
        if not to and not cc:
            raise ValueError("no deliverable recipient")
        sender = draft.from_address.strip().lower() or self.support_address
        if not is_simple_address(sender):
            raise ValueError("the draft's from address is not one plain address")
        from_name = clean_display_name(draft.from_name) or self.from_name
        message_id = bracketed(self.signer.message_id(draft.ticket_number, draft.message_key))
        subject = reply_subject(draft.ticket_subject, draft.ticket_ref)
        text, html_body = self.render(draft, subject)
        msg = EmailMessage(policy=policy.SMTP)
        msg["From"] = Address(display_name=from_name, addr_spec=sender)
        if to:
            msg["To"] = [_address(r) for r in to]
        if cc:
            msg["Cc"] = [_address(r) for r in cc]
        msg["Reply-To"] = Address(display_name=from_name,
                                  addr_spec=self.signer.reply_address(sender, draft.ticket_number))
        msg["Subject"] = subject
        msg["Date"] = format_datetime(draft.date)
        msg["Message-ID"] = message_id
        if draft.in_reply_to:
            msg["In-Reply-To"] = bracketed(draft.in_reply_to)
        references = trim_references([bracketed(r) for r in draft.references])
        if references:
            msg["References"] = " ".join(references)
        if draft.automatic:
            # RFC 3834, and Exchange's own flag: no out-of-office or auto-reply back to us.
            msg["Auto-Submitted"] = "auto-replied"
            msg["X-Auto-Response-Suppress"] = "All"
        msg["X-Loop"] = sender
        msg.set_content(text, subtype="plain", cte="quoted-printable")
        msg.add_alternative(html_body, subtype="html", cte="quoted-printable")
        for attachment in draft.attachments:
            maintype, _, subtype = attachment.content_type.partition("/")
            if not maintype or not subtype or not re.fullmatch(r"[\w.+-]+", maintype + subtype):
                maintype, subtype = "application", "octet-stream"
            msg.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                               filename=clean_text(attachment.filename, 200) or "attachment")
        content = msg.as_bytes(policy=policy.SMTP)
        if self.dkim_key is not None:
            content = self._sign(content)
        return Composed(message_id, content, [r.email for r in [*to, *cc]])

    def render(self, draft: Draft, subject: str) -> tuple[str, str]:
        """The plain-text and HTML bodies, from the same context. A staff message's `body_html` is
        sanitized again here, or made from `body_text` when the message has no HTML of its own."""
        try:
            return self._render(draft, subject)
        except jinja2.TemplateError as e:  # an operator's template: the notifier tells staff
            raise ValueError(f"template {draft.template!r} does not render: {type(e).__name__}: {e}") from e

    def _render(self, draft: Draft, subject: str) -> tuple[str, str]:
        context: dict[str, Any] = {
            "desk_name": self.desk_name, "subject": subject, "preheader": "",
            "reply_marker": REPLY_MARKER, "token": self.signer.ticket_token(draft.ticket_number),
            "customer_name": draft.to[0].name if draft.to else "",
            "signature": draft.signature.strip(),
            "ticket": {"ref": draft.ticket_ref, "number": draft.ticket_number, "subject": draft.ticket_subject},
            **draft.context,
        }
        if "body_text" in context and not isinstance(context.get("body_html"), Markup):
            source = context.get("body_html")
            context["body_html"] = safe_html(source) if source else text_to_html(context["body_text"])
        text = self.templates.get_template(f"email/{draft.template}.txt.j2").render(context)
        html_body = self.templates.get_template(f"email/{draft.template}.html.j2").render(context)
        return text, html_body

    def _sign(self, content: bytes) -> bytes:
        import dkim  # optional: only needed when a key is configured

        assert self.dkim_key is not None
        signature = dkim.sign(content, self.dkim_key.selector.encode(), self.dkim_key.domain.encode(),
                              self.dkim_key.private_key, include_headers=DKIM_HEADERS)
        return signature + content


def is_simple_address(email: str) -> bool:
    """Plain local@domain: nothing that could change meaning inside an address header."""
    return bool(_SIMPLE_ADDRESS.match(email)) and len(email) <= 320


def _address(recipient: Recipient) -> Address:
    return Address(display_name=clean_display_name(recipient.name), addr_spec=recipient.email)


def text_to_html(text: str) -> Markup:
    """Staff text as HTML paragraphs: escaped, blank lines split paragraphs, single newlines break."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return Markup("\n".join(
        '<p style="margin:0 0 16px;">' + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs))


def safe_html(fragment: str) -> Markup:
    """HTML a staff member wrote, reduced to formatting (no images, scripts, styles or forms)."""
    return Markup(nh3.clean(fragment, tags=_HTML_TAGS, attributes={"a": {"href"}},
                            url_schemes={"http", "https", "mailto"}))
