"""Mail out: composing, queueing from events, and sending over SMTP (or into a local maildir)."""
