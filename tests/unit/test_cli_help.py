"""`--help`: every option explained with its default, an example for every command."""

from __future__ import annotations

import argparse

import pytest

from stream_monitor.cli import EXAMPLES, build_parser, signal_matches


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_has_an_example_that_the_parser_accepts():
    commands = _commands()
    assert set(EXAMPLES) == set(commands)
    for name, command in commands.items():
        text = command.format_help()
        assert "\nexample" in text, name
        for example in EXAMPLES[name]:
            assert example.startswith(f"stream-monitor {name} ")
            assert example.splitlines()[0] in text
            words = example.replace("\\\n", " ").split()[1:]
            build_parser().parse_args(words)  # the example is a valid command line (exits 2 if not)


def test_every_option_has_help_text():
    for name, command in _commands().items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
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
