"""Thin subscribers: each decodes, calls a service function, encodes the answer.

FastStream subscribers, except the quote subject: a plain nats-py subscription
(`plain.PlainResponder`), where FastStream's per-message path cost more than the quote.
"""
