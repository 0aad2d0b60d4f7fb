"""The conformance suites users run: one file per concern, each test one check over its subjects."""
