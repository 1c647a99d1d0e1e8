"""Thin FastStream subscribers: each decodes, calls a service function, encodes the answer."""
