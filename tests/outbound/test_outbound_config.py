"""Mail out as configured: relay or maildir, the password from the environment, operator templates, DKIM."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest

from core.mail_drafts import Draft, Recipient
from mail_gateway.outbound.maildir import MaildirTransport
from mail_gateway.outbound.smtp import SmtpTransport
from supportbot.config import ConfigError, load_config
from supportbot.outbound import build_composer, build_transport, retry_policy


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supportbot.toml"
    path.write_text('[mail]\nsupport_addresses = ["help@example.test"]\n' + text)
    return path


def reply_draft() -> Draft:
    return Draft(template="reply", ticket_number=7, ticket_ref="#7", ticket_subject="Hi", message_key="m1",
                 to=[Recipient("a@example.org")], date=datetime(2026, 3, 2, tzinfo=UTC), automatic=False,
                 context={"body_text": "Body here", "body_html": "<p>Body here</p>", "staff_name": "Sam",
                          "attachments": []})


def test_no_relay_host_means_the_local_maildir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[desk]\ndata_dir = "data"\n'))
    transport = build_transport(config)
    assert isinstance(transport, MaildirTransport)
    assert transport.path == tmp_path / "data" / "outbox-maildir"


def test_relay_password_comes_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[mail.outbound]\nhost = "smtp.example.test"\nport = 465\nsecurity = "tls"\n'
                           'username = "desk"\nretry_initial_seconds = 5\n')
    config = load_config(path, environ={"SUPPORTBOT_SMTP_PASSWORD": "from-env"})
    transport = build_transport(config)
    assert isinstance(transport, SmtpTransport)
    assert (transport.settings.host, transport.settings.port, transport.settings.security) == (
        "smtp.example.test", 465, "tls")
    assert transport.settings.password == "from-env"
    assert retry_policy(config).initial.total_seconds() == 5


def test_a_bad_security_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mail\.outbound\.security = 'ssl'"):
        load_config(write(tmp_path, '[mail.outbound]\nsecurity = "ssl"\n'))


def test_operator_templates_replace_ours_one_file_at_a_time(tmp_path: Path) -> None:
    (tmp_path / "mine" / "email").mkdir(parents=True)
    (tmp_path / "mine" / "email" / "reply.txt.j2").write_text(
        "{{ reply_marker }}\nOURS: {{ body_text }}\nref:{{ token }}\n")
    config = load_config(write(tmp_path, '[mail.outbound]\ntemplates_dir = "mine"\n'))
    composed = build_composer(config, b"k").compose(reply_draft())
    msg = email.message_from_bytes(composed.content, policy=policy.default)
    assert "OURS: Body here" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Sam" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]  (built-in html)
    assert msg["From"] == "Support <help@example.test>"


def test_dkim_key_from_the_config_signs_every_mail(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "dkim.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    config = load_config(write(tmp_path, '[mail.outbound]\ndkim_selector = "s1"\ndkim_private_key = "dkim.pem"\n'))
    content = build_composer(config, b"k").compose(reply_draft()).content
    assert content.startswith(b"DKIM-Signature:") and b"d=example.test" in content and b"s=s1" in content
