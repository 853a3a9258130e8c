"""The command line: ``npllm train | generate | tokenizer | bench``.

Each subcommand parses its own flags and hands over to the module that does
the work, so this file stays a table of contents.  Errors a user can cause
(a missing file, a corrupt checkpoint) are printed as one line, not a
traceback, and exit with status 2.
"""

import argparse
import sys


def _bench(argv):
    parser = argparse.ArgumentParser(prog="npllm bench", description="Measure speed; prints figures.")
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark to run")
    args, rest = parser.parse_known_args(argv)
    module = __import__(BENCHMARKS[args.what], fromlist=["main"])
    return module.main(rest)


BENCHMARKS = {
    "ops": "npllm.benchmarks.ops",
    "tokenizer": "npllm.tokenizer.bench",
    "train": "npllm.benchmarks.train",
}

COMMANDS = {
    "bench": (_bench, "measure speed (ops, tokenizer, train)"),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: npllm <command> [options]\n\ncommands:")
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<10} {summary}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nnpllm: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    command, _ = COMMANDS[argv[0]]
    return command(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
