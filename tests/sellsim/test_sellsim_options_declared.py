"""Every sellsim option is declared with its evidence mark and its test values (issue 23).

The sync's matrix test (tests/sync/test_open_answers_matrix.py) runs one world per value of
every [I] or [T] option; an option added without a declaration would never be run there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sellsim import options as opts

README = Path(opts.__file__).with_name("README.md").read_text(encoding="utf-8")


def test_every_option_sellsim_accepts_is_declared(sim):
    """Planted bugs: an option left out of ``DECLARED``; a declared name that is no option."""
    assert set(opts.DECLARED) == opts.option_names()
    assert set(sim.options()) == opts.option_names()  # what sellsim accepts over HTTP


@pytest.mark.parametrize("name", sorted(opts.DECLARED))
def test_each_declaration_is_sound(name):
    """A mark from the reference's legend; two values for a numeric option; every choice of an
    [I]/[T] option with a fixed set; each value accepted by the option; the README row."""
    declared = opts.DECLARED[name]
    assert declared.mark in {"C", "T", "I"}
    default = getattr(opts.Options(), name)
    assert len(set(map(repr, declared.values))) == len(declared.values) >= 2
    if isinstance(default, int | float) and not isinstance(default, bool):
        assert len(declared.values) == 2
    choices = opts._CHOICES.get(name)
    if choices and declared.mark in {"I", "T"}:
        assert set(declared.values) == set(choices)
    for value in declared.values:
        assert getattr(opts.make_options({name: value}), name) == value
    assert f"| `{name}`" in README or f"`{name}` /" in README or f"/ `{name}`" in README


def test_open_answers_are_the_i_and_t_values():
    answers = opts.open_answers()
    assert ("rate_window", "hourly_lockout") in answers
    assert ("custom_list_read_format", "object") in answers
    assert not any(name == "reject_lowercase_method" for name, _ in answers)  # [C]
    assert len(answers) == sum(len(d.values) for d in opts.DECLARED.values() if d.mark != "C")
