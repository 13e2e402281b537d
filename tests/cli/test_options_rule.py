"""Options are parsed once: each command's ``cmd_X(args)`` reads its ``argparse.Namespace`` into
frozen option objects (the ``from_args`` constructors), and nothing below it takes or changes the
Namespace. Kept true by an AST walk over ``featuremaps/cli/*.py`` (Polygraphy's
``test_no_cli_deps.py`` idea)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import featuremaps.cli as cli

SOURCES = sorted(Path(cli.__file__).parent.glob("*.py"))
# what may be handed the Namespace: the option groups' constructors, a read by name, and main's
# dispatch to the command (``args.func(args)``, func being the cmd_X its subparser set)
TAKES_ARGS = ("from_args", "getattr", "func")


def _allowed(name: str) -> bool:
    return name.startswith("cmd_") or name == "from_args"


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]


def _params(fn) -> list[str]:
    a = fn.args
    return [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if p is not None]


def violations(source: str, filename: str = "<cli>") -> list[str]:
    """Where ``source`` breaks the rule: a function other than ``cmd_*``/``from_args`` taking
    ``args``; ``args`` passed on to anything but :data:`TAKES_ARGS`; an assignment to
    ``args.<attr>`` (plain, augmented, annotated, deleted, or through ``setattr``/``vars``)."""
    tree = ast.parse(source, filename)
    found = []
    for fn in _functions(tree):
        name = getattr(fn, "name", "<lambda>")
        if "args" in _params(fn) and not _allowed(name):
            found.append(f"{filename}:{fn.lineno} {name}() takes args")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, (ast.Attribute, ast.Subscript)) and _is_args(sub.value):
                        found.append(f"{filename}:{node.lineno} writes to args")
        if isinstance(node, ast.Call):
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            passed = [a for a in (*node.args, *(k.value for k in node.keywords)) if _is_args(a)]
            if passed and callee in ("setattr", "delattr", "vars"):
                found.append(f"{filename}:{node.lineno} {callee}(args, ...)")
            elif passed and callee not in TAKES_ARGS:
                found.append(f"{filename}:{node.lineno} passes args to {callee}()")
    return found


def _is_args(node) -> bool:
    return isinstance(node, ast.Name) and node.id == "args"


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_only_cmd_and_from_args_see_the_namespace(path):
    assert violations(path.read_text(), path.name) == []


@pytest.mark.parametrize("source", [
    "def _helper(args):\n    return args.model\n",
    "def cmd_x(args):\n    args.decode = 'full'\n",
    "def cmd_x(args):\n    setattr(args, 'actors', 1)\n",
    "def cmd_x(args):\n    vars(args)['actors'] = 1\n",
    "def cmd_x(args):\n    args.actors += 1\n",
    "def cmd_x(args):\n    return _helper(args)\n",
    "def cmd_x(args):\n    return _helper(options=args)\n",
    "f = lambda args: args.x\n",
], ids=["helper-param", "assign", "setattr", "vars", "augassign", "passed-on", "passed-as-keyword", "lambda"])
def test_the_rule_catches_each_way_round_it(source):
    """The checker itself: each way a helper could see or change the Namespace is reported."""
    assert violations(source)


def test_the_rule_allows_reading_args_in_cmd_and_from_args():
    source = ("class O:\n    @classmethod\n    def from_args(cls, args):\n        return cls(args.x)\n"
              "def cmd_x(args):\n    o = O.from_args(args)\n    return run(o, args.y)\n")
    assert violations(source) == []
