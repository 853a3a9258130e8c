"""Benchmarks: speed is measured here and printed, never asserted in a test.

Each module has a ``main(argv)`` that ``npllm bench <name>`` calls; with
``--json`` the last line printed is one JSON object, for scripts.
"""
