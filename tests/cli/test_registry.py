"""The CLI is a registry of command modules: one module per command, named after it, and a new
module (``featuremaps/cmd_<name>.py`` from another branch) joins with one line."""

from __future__ import annotations

import sys
import types

import pytest

import featuremaps.cli as cli


@pytest.mark.parametrize("module", cli.COMMAND_MODULES)
def test_one_module_per_command_named_after_it(module, capsys):
    name = module.rsplit(".", 1)[1]
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"usage: featuremaps {name} ")


def test_every_command_module_is_registered():
    from pathlib import Path

    on_disk = {p.stem for p in Path(cli.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert {m.rsplit(".", 1)[1] for m in cli.COMMAND_MODULES} == on_disk


def test_a_command_module_joins_with_one_line(monkeypatch, capsys):
    mod = types.ModuleType("featuremaps.cmd_hello")

    def register(sub):
        p = sub.add_parser("hello", help="say hello")
        p.add_argument("--name", default="world")
        p.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)

    mod.register = register
    monkeypatch.setitem(sys.modules, "featuremaps.cmd_hello", mod)
    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ["featuremaps.cmd_hello"])
    assert cli.main(["hello", "--name", "maps"]) == 0
    assert capsys.readouterr().out == "hello maps\n"


def test_old_cli_names_still_importable_for_command_modules():
    """cmd_<name>.py files written against the old featuremaps/cli.py import these from featuremaps.cli."""
    from featuremaps.cli import CLIError, DEFAULT_LAYERS, ModelSpec, add_model_args, resolve_model  # noqa: F401
    from featuremaps.errors import ArgumentError

    assert CLIError is ArgumentError and DEFAULT_LAYERS == "0,5,10,17,28"
