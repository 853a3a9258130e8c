"""Micro-benchmarks, run as ``npllm bench <name>``; each module has ``main(argv)`` and prints its figures."""
