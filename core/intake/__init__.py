"""Intake: what becomes of each mail the edges store and parse. The one entry point is
`Intake.take(batch)`; the mail edge hands it `Parsed` values built from `ParsedMail`.

    edge: store raw bytes (core.inbound) → parse (mail_gateway) → Intake.take([Parsed, …])
    here: claim → thread match → rules chain → routing, participants → ticket service → mark
"""

from core.intake.outcome import Kind, Outcome
from core.intake.settings import IntakeSettings, KeywordRule
from core.intake.take import Intake, Parsed, quarantine
from core.parsed_mail import Address, DeliveryReport, ParsedAttachment, ParsedMail, RecipientStatus

__all__ = ["Address", "DeliveryReport", "Intake", "IntakeSettings", "KeywordRule", "Kind", "Outcome", "Parsed",
           "ParsedAttachment", "ParsedMail", "RecipientStatus", "quarantine"]
