"""Routing of new tickets: category from the address written to, category and priority from keywords."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from core.addresses import normalize, without_tag
from core.enums import Priority
from core.intake.settings import IntakeSettings

MAX_TEXT_SCANNED = 20_000  # keywords that matter sit near the top; keeps huge mails cheap


@dataclass(frozen=True)
class Route:
    category: str | None = None
    priority: Priority | None = None
    why: str = ""


def route(settings: IntakeSettings, recipients: Iterable[str], subject: str, text: str) -> Route:
    """The first matching address sets the category; the first matching keyword rule fills in the rest."""
    category: str | None = None
    reasons: list[str] = []
    for address in recipients:
        category = _category_for_address(settings, address)
        if category:
            reasons.append(f"address {address.lower()} -> {category}")
            break
    priority: Priority | None = None
    found = re.findall(r"\w+", f"{subject}\n{text[:MAX_TEXT_SCANNED]}".lower())
    words, phrase_text = set(found), f" {' '.join(found)} "
    for rule in settings.keyword_rules:
        # Whole words only ("down" must not match "download"); a rule word may be a phrase.
        hit = next((w for w in rule.words if _normal(w) in words or f" {_normal(w)} " in phrase_text), None)
        if hit is None:
            continue
        if category is None and rule.category:
            category = rule.category
        if priority is None and rule.priority:
            priority = rule.priority
        reasons.append(f"keyword {hit!r}")
        if category is not None and priority is not None:
            break
    return Route(category, priority, "; ".join(reasons))


def support_address(settings: IntakeSettings, recipients: Iterable[str]) -> str | None:
    """The first of our support addresses the mail reached, plus-tag folded (`billing+x@` -> `billing@`),
    in the order given (To, Cc, Delivered-To, the envelope); None when it reached none of them."""
    ours = settings.own.addresses
    for address in recipients:
        email = normalize(address)
        if email is None:
            continue
        if email in ours:
            return email
        if without_tag(email) in ours:
            return without_tag(email)
    return None


def _category_for_address(settings: IntakeSettings, address: str) -> str | None:
    exact = address.strip().lower()  # billing+token@ routes like billing@, unless named itself
    return settings.category_by_address.get(exact) or settings.category_by_address.get(without_tag(exact))


def _normal(word: str) -> str:
    return " ".join(re.findall(r"\w+", word.lower()))
