"""`--help`: every option explained with its default, an example for every command."""

from __future__ import annotations

import argparse

import pytest

from stream_monitor.cli import EXAMPLES, build_parser, signal_matches


def _commands(parser: argparse.ArgumentParser | None = None,
              path: tuple[str, ...] = ()) -> dict[str, argparse.ArgumentParser]:
    """Every command by its words ("replay"; a nested one as "topics create"), nested ones too."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in (parser or build_parser())._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found[" ".join((*path, name))] = command
                found.update(_commands(command, (*path, name)))
    return found


def _leaves() -> dict[str, argparse.ArgumentParser]:
    """The commands that run something (not a group of commands)."""
    return {name: command for name, command in _commands().items() if not _commands(command)}


def test_every_command_has_an_example():
    leaves = _leaves()
    assert {"run", "replay", "simulate", "reference", "check-config", "alerts"} <= set(leaves)
    for name, command in leaves.items():
        text = command.format_help()
        assert "\nexample" in text, f"{name}: no example in its --help"
        assert f"  stream-monitor {name} " in text or f"example: stream-monitor {name} " in text, name


def test_the_examples_are_command_lines_the_parser_accepts():
    commands = _commands()
    for name, examples in EXAMPLES.items():
        assert name in commands, f"an example for {name!r}, which is no command"
        for example in examples:
            assert example.startswith(f"stream-monitor {name} ")
            assert example.splitlines()[0] in commands[name].format_help()
            build_parser().parse_args(example.replace("\\\n", " ").split()[1:])  # exits 2 if invalid


def test_every_option_has_help_text():
    for name, command in _commands().items():
        for action in command._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 8, f"{name} {action.option_strings}: no help"


def test_every_default_worth_showing_is_shown():
    for name, command in _commands().items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            default = action.default
            if default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
                continue
            assert f"(default: {default})" in text or "default" in (action.help or ""), \
                f"{name} {action.option_strings[0]}: default {default!r} not shown"


@pytest.mark.parametrize("command, option, shown", [
    ("replay", "--report-points", "(default: 2000)"),
    ("replay", "--progress-interval", "(default: 5.0)"),
    ("simulate", "--events", "(default: 10000)"),
    ("simulate", "--topic", "(default: ml.predictions)"),
    ("alerts", "--from-beginning", "(default: only new alerts)"),
])
def test_defaults_appear_in_the_help(command, option, shown):
    text = " ".join(_commands()[command].format_help().split())
    assert option in text and shown in text


def test_signal_filter_matches_the_full_name_or_the_name_after_its_prefix():
    assert signal_matches("amount", "feature:amount")
    assert signal_matches("feature:amount", "feature:amount")
    assert signal_matches("error_rate", "performance:error_rate")
    assert signal_matches("prediction", "prediction")
    assert not signal_matches("amount", "feature:amount_eur")
    assert not signal_matches("feature:amount", "feature:amount_eur")
    assert not signal_matches("feature:amount", "amount")
