"""Fake provider servers (real sockets on 127.0.0.1) for tests and the demo."""

from lumiku_bgremover.engines.fakes.providers import FakeHuggingFace, FakeSegmind
from lumiku_bgremover.engines.fakes.server import FakeServer, Fault, Recorded, Reply

__all__ = ["FakeHuggingFace", "FakeSegmind", "FakeServer", "Fault", "Recorded", "Reply"]
