"""Find ``assert`` statements that cannot fail.

``python tests/check_asserts.py [PATH ...]`` (default: the ``tests`` folder) parses
every ``.py`` file under the paths with :mod:`ast` and prints ``file:line: reason``
for each assert whose condition is true whatever the code under test does:

* a constant or a non-empty literal (``assert True``, ``assert (x, "message")``);
* a comparison true for every value: ``len(...) >= 0``, ``abs(...) >= 0``, ``x == x``;
* ``X is not None`` where ``X`` is a literal, a comparison or a builtin's result;
* an ``or`` with one such operand in the condition (an operand of ``and`` / ``or``, or
  the element of ``all`` / ``any`` over a comprehension), or with an operand that
  the others make true: ``X is not None`` next to an operand that reads ``X.attr``
  or ``X[...]`` (which raises before the assert could fail), or a quantity whose name
  ends in a non-negative SI unit (``energy_j``, ``latency_s``, ``payload_bytes``, ...)
  compared with ``>= 0``.

It exits with 1 when it finds any (``make test`` runs it before pytest), else 0.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# results of these builtins are never None
_NEVER_NONE_CALLS = frozenset({"len", "abs", "str", "int", "float", "bool", "list", "dict", "set", "tuple", "sorted"})
# results of these are never negative
_NON_NEGATIVE_CALLS = frozenset({"len", "abs"})
# name endings of quantities that cannot be negative: joules, seconds, bytes, bit/s, watts, hertz
_NON_NEGATIVE_UNITS = ("_j", "_s", "_bytes", "_bps", "_w", "_hz")
_LITERALS = (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.JoinedStr)


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _is_number(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _number(node: ast.AST) -> float:
    return ast.literal_eval(node)


def _truthy_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return bool(node.value)
    if isinstance(node, ast.Dict):
        return bool(node.keys)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return bool(node.elts)
    if isinstance(node, ast.JoinedStr):
        return any(not (isinstance(v, ast.Constant) and v.value == "") for v in node.values)
    return False


def _at_least(node: ast.AST, op: ast.cmpop, bound: ast.AST, non_negative) -> bool:
    """``node op bound`` with ``node`` never negative and ``bound`` a number that makes it always true."""
    if not (non_negative(node) and _is_number(bound)):
        return False
    c = _number(bound)
    return (isinstance(op, ast.GtE) and c <= 0) or (isinstance(op, ast.Gt) and c < 0)


_MIRROR = {ast.LtE: ast.GtE, ast.Lt: ast.Gt}


def _never_negative_compare(node: ast.AST, non_negative) -> bool:
    """``X >= c`` / ``c <= X`` (c <= 0), or ``X > c`` / ``c < X`` (c < 0), with ``non_negative(X)``."""
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
        return False
    left, op, right = node.left, node.ops[0], node.comparators[0]
    if _at_least(left, op, right, non_negative):
        return True
    mirrored = _MIRROR.get(type(op))
    return mirrored is not None and _at_least(right, mirrored(), left, non_negative)


def _has_call(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))


def always_true(node: ast.AST) -> str | None:
    """Why ``node`` is true for every value of its names, or None."""
    if _truthy_literal(node):
        return "a constant or non-empty literal is always true"
    if _never_negative_compare(node, lambda x: _call_name(x) in _NON_NEGATIVE_CALLS):
        return "len(...) / abs(...) compared with a bound at or below 0 is always true"
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, op, right = node.left, node.ops[0], node.comparators[0]
        if isinstance(op, (ast.Eq, ast.LtE, ast.GtE, ast.Is)) and not _has_call(left):
            if ast.dump(left) == ast.dump(right):
                return "an expression compared with itself"
        if isinstance(op, ast.IsNot) and isinstance(right, ast.Constant) and right.value is None:
            never_none = (
                (isinstance(left, ast.Constant) and left.value is not None)
                or isinstance(left, _LITERALS + (ast.Compare, ast.ListComp, ast.SetComp, ast.DictComp))
                or _call_name(left) in _NEVER_NONE_CALLS
            )
            if never_none:
                return "this expression is never None"
    return None


def _unit_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    return None


def _non_negative_quantity(node: ast.AST) -> bool:
    name = _unit_name(node)
    return name is not None and name.endswith(_NON_NEGATIVE_UNITS)


def _dereferenced(node: ast.AST) -> set[str]:
    """``ast.dump`` of every expression that ``node`` reads an attribute or item of."""
    return {ast.dump(n.value) for n in ast.walk(node) if isinstance(n, (ast.Attribute, ast.Subscript))}


def _or_operand_made_true(operand: ast.AST, others: list[ast.AST]) -> str | None:
    """Why ``operand`` is true whenever the other operands of its ``or`` can be evaluated."""
    if _never_negative_compare(operand, _non_negative_quantity):
        return "a quantity with a non-negative unit in its name compared with >= 0 is always true"
    if (
        isinstance(operand, ast.Compare)
        and len(operand.ops) == 1
        and isinstance(operand.ops[0], ast.IsNot)
        and isinstance(operand.comparators[0], ast.Constant)
        and operand.comparators[0].value is None
    ):
        target = ast.dump(operand.left)
        if any(target in _dereferenced(o) for o in others):
            return "'is not None' of a value another operand reads from (that operand raises when it is None)"
    return None


def _conditions(test: ast.AST):
    """The condition ``test`` and the sub-expressions whose truth decides it: the operands
    of ``and`` / ``or``, and the element of ``all(...)`` / ``any(...)`` over a
    comprehension (an ``or`` used for its value, ``x or default``, is not among them)."""
    yield test
    if isinstance(test, ast.BoolOp):
        for v in test.values:
            yield from _conditions(v)
    elif _call_name(test) in ("all", "any") and len(test.args) == 1:
        arg = test.args[0]
        if isinstance(arg, (ast.GeneratorExp, ast.ListComp, ast.SetComp)):
            yield from _conditions(arg.elt)


def assert_problems(test: ast.AST) -> list[str]:
    """Why the condition ``test`` of an assert cannot fail (empty when it can)."""
    found = []
    why = always_true(test)
    if why:
        found.append(why)
    for node in _conditions(test):
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            for i, operand in enumerate(node.values):
                others = node.values[:i] + node.values[i + 1 :]
                why = always_true(operand) or _or_operand_made_true(operand, others)
                if why:
                    found.append(f"'or' with an operand that is always true: {why}")
    return found


def problems(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, reason) of every assert in ``source`` that cannot fail."""
    tree = ast.parse(source, filename)
    return [(n.lineno, why) for n in ast.walk(tree) if isinstance(n, ast.Assert) for why in assert_problems(n.test)]


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv else ["tests"])]
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))
    bad = 0
    for f in files:
        for line, why in sorted(problems(f.read_text(encoding="utf-8"), str(f))):
            print(f"{f}:{line}: assert cannot fail: {why}")
            bad += 1
    if bad:
        print(f"{bad} assert(s) that cannot fail in {len(files)} files", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
