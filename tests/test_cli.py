"""The command line: help, unknown commands, and each subcommand on a tiny configuration."""

from npllm.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    assert "bench" in capsys.readouterr().out


def test_unknown_command_is_one_clear_line(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
