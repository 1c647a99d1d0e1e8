"""Operators' tools: work-queue state, pause and resume, dead letters, old rows."""
