"""Tests of the mail gateway: parsing, quote stripping, HTML."""
