"""Harnesses that check the library against itself: the bad-input catalogue, planted leaks for the audit, and
injected faults. Used by tests/ and benchmarks/, never by training."""
