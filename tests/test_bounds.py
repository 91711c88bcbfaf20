"""Every numeric argument of every command has bounds that say why (``lowpower.safe.bounds``).

A bare ``type=int`` takes 10000 for a size (and the kernel kills the run at 23 GB) or 0 for a count
(and a default is used without a word). The test records every ``add_argument`` a command's parser
makes while it prints its ``--help``, so no command can add a bare number unseen.
"""
import argparse
import contextlib
import io

import pytest

from lowpower import cli


@pytest.fixture
def bare_numbers(monkeypatch):
    """The list that every later ``add_argument(..., type=int|float)`` appends its option strings to."""
    found = []
    original = argparse._ActionsContainer.add_argument

    def recording(self, *names, **kwargs):
        if kwargs.get("type") in (int, float):
            found.append("/".join(names))
        return original(self, *names, **kwargs)

    monkeypatch.setattr(argparse._ActionsContainer, "add_argument", recording)
    return found


@pytest.mark.parametrize("words", sorted(cli.TABLE))
def test_no_command_takes_an_unbounded_number(words, bare_numbers):
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit):
        cli.load(cli.TABLE[words])(["--help"])
    assert bare_numbers == [], "give these arguments lowpower.safe.bounds.bounded(kind, low, high, why)"


def test_the_recorder_sees_a_bare_number(bare_numbers):
    """The check above could fail: a parser with a bare int is seen."""
    argparse.ArgumentParser().add_argument("--size", type=int)
    assert bare_numbers == ["--size"]
