"""The package's shape: only persona/run.py knows where a run keeps its things, and no import cycle exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "persona"
# names of things inside a run folder, a trained-model folder or a dataset folder
RUN_CONTENTS = re.compile(r"^(run\.json|(synthesis|prompts|responses|judgements|answers|eval-base-answers)\.jsonl"
                          r"|persona_train\.yaml|metrics\.json|build\.json|reward\.json|report\.html|datasets|eval"
                          r"|adapter_config\.json|tokenizer_config\.json|checkpoint-.*|merged|(train|eval)\.jsonl|\.jsonl"
                          r"|README\.md|train-.*|dpo|kto|sft)$")
PATH_CALLS = ("joinpath", "glob", "rglob", "with_name", "removeprefix", "startswith")


def literal(node) -> str | None:
    """The text of a string constant, or the literal parts of an f-string ("{}" for each value)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def path_strings(source: str) -> list[tuple[int, str]]:
    """Strings a module joins into a path (`folder / "name"`, `.joinpath("name")`, `.glob("x-*")`, ...) or
    matches folder names against."""
    found = []
    for node in ast.walk(ast.parse(source)):
        operands = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            operands = [node.left, node.right]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PATH_CALLS:
            operands = list(node.args)
        for operand in operands:
            text = literal(operand)
            if text is not None:
                name = text.replace("{}", "x").rsplit("/", 1)[-1]
                if RUN_CONTENTS.match(name) or RUN_CONTENTS.match(text.split("{}")[-1]):
                    found.append((node.lineno, text))
    return found


def test_only_run_py_builds_run_paths():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "run.py" and path.parent == PACKAGE:
            continue
        offenders += [f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}"
                      for line, text in path_strings(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_the_check_finds_path_strings():
    """The check above can fail: each way of joining a run path is caught, prose and other paths are not."""
    code = ("a = run / 'run.json'\nb = out / f'{split}.jsonl'\nc = out.glob('checkpoint-*')\n"
            "d = base / 'datasets' / 'dpo'\ne = Path('runs') / name\nf = 'the datasets are ready'\n"
            "g = name.removeprefix('train-')\n")
    assert sorted(line for line, _ in path_strings(code)) == [1, 2, 3, 4, 4, 7]


def imports(path: Path) -> set[str]:
    """persona modules a file imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("persona"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("persona"))
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Import cycles as "a -> b -> a"; a package importing its own submodules (or back) does not count."""
    cycles = set()

    def visit(node, stack):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycle = stack[stack.index(nxt):] + [nxt]
                if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(cycle, cycle[1:])):
                    cycles.add(" -> ".join(cycle))
            elif len(stack) < 12:
                visit(nxt, stack + [nxt])

    for name in graph:
        visit(name, [name])
    return sorted(cycles)


def test_no_import_cycle():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}
    assert find_cycles(graph) == []
    # the check can fail: the cycle this package used to have (judges/reward.py <-> train.py) is found
    assert find_cycles({**graph, "persona.train": graph["persona.train"] | {"persona.judges.reward"},
                        "persona.judges.reward": graph["persona.judges.reward"] | {"persona.train"}})


def test_the_cli_has_one_error_boundary():
    """Commands raise PersonaError; `command()` (and main(), for errors outside any command) turns it into
    "error: ... / hint: ..." and an exit code - no command catches it itself."""
    import ast

    tree = ast.parse((PACKAGE / "cli.py").read_text(encoding="utf-8"))
    catching = sorted({f.name for f in tree.body if isinstance(f, ast.FunctionDef)
                       for h in ast.walk(f) if isinstance(h, ast.ExceptHandler)
                       and isinstance(h.type, ast.Name) and h.type.id == "PersonaError"})
    # `persona ls` marks an unreadable spec INVALID and goes on: that lives in persona.display.listing now
    assert catching == ["command", "main"], catching
