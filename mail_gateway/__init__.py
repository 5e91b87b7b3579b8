"""The mail edge of supportbot: reading inbound mail (parsing, quotes, HTML) and, later, sending."""
