"""The package's layers point one way, have no import cycles, and import at module top.

`LAYERS` is the documented layering (docs/extending.md, layout): a module may import from its own layer or a
lower one, never a higher one. The checks read the source with `ast`; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "ctde"

# Module (or package) prefix -> rank; the longest matching prefix gives a module's layer.
LAYERS = {
    "ctde.errors": 0, "ctde.config": 0, "ctde.envs": 0, "ctde.nets": 0,  # what everything stands on
    "ctde.policy": 0, "ctde.audit": 0,  # the exported artifact, loadable with nets alone, and its audit
    "ctde.paradigms": 1,
    "ctde.algos": 2,
    "ctde.training": 3,
    "ctde.experiments": 4,
    "ctde.cli": 5,
    "ctde": 6,  # ctde/__init__.py, the public API
    "ctde.testing": 7,  # test and campaign harnesses, which drive everything up to the command line
}

# Imports of ctde inside function bodies that stay there: (importing file, imported module) -> why.
LAZY_ALLOWED = {
    **{("ctde/__init__.py", module): "ctde/__init__.py runs before any submodule; importing the training stack "
       "here would make `import ctde.policy` (which needs only ctde.nets) load it all"
       for module in ("ctde.training.runner", "ctde.policy", "ctde.audit")},
    **{("ctde/envs/__init__.py", module): "MPE's modules build JAX arrays when imported, which starts JAX's backend "
       "(and claims a GPU): at the top, every `import ctde` would start it; imported when an mpe:* id is used"
       for module in ("ctde.envs.mpe", "ctde.envs.push_forward")},
    ("ctde/envs/host/__init__.py", "ctde.envs.host.smac"): "the SMAC / SMAClite adapter, used only with the "
    "optional smac / smaclite packages; it imports require_package from this package",
    ("ctde/envs/host/__init__.py", "ctde.envs.host.grf"): "the Google Research Football adapter, used only with "
    "the optional gfootball package; it imports GRF_SCENARIOS and require_package from this package",
}

# Names of ctde/__init__.py any module may read: set before the package imports any submodule.
METADATA = {"__version__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> tuple[str, int]:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return prefix, LAYERS[prefix]


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base[:len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path):
    """Every import of ctde in one file: (line, imported module, at module level, only for type checking)."""
    importer = module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node, in_function: bool, type_checking: bool):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "ctde" or alias.name.startswith("ctde."):
                    found.append((node.lineno, alias.name, not in_function, type_checking))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, importer, path.name == "__init__.py")
            if target == "ctde" or target.startswith("ctde."):
                for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
                    if target == "ctde" and alias.name in METADATA:
                        continue
                    sub = f"{target}.{alias.name}"
                    found.append((node.lineno, sub if sub in MODULES else target, not in_function, type_checking))
        for child in ast.iter_child_nodes(node):
            guarded = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) and child in node.body
            visit(child, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                  type_checking or guarded)

    visit(tree, False, False)
    return sorted(set(found))  # `from m import a, b` is one import of m


def test_layers_point_one_way():
    upward = []
    for importer, path in MODULES.items():
        own, rank = layer(importer)
        for line, target, _, _ in imports(path):
            other, other_rank = layer(target)
            if other_rank > rank:
                upward.append(f"{path.relative_to(SRC)}:{line}: {importer} (layer {own}, {rank}) imports {target} "
                              f"(layer {other}, {other_rank})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = {m: sorted({t for _, t, top, tc in imports(p) if top and not tc and t != m}) for m, p in MODULES.items()}
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def walk(module, path):
        state[module] = 1
        for target in graph.get(module, ()):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                walk(target, path + [target])
        state[module] = 2

    for module in graph:
        if module not in state:
            walk(module, [module])
    assert not cycles, "module-level import cycles:\n" + "\n".join(cycles)


def test_imports_at_module_top():
    lazy = []
    for importer, path in MODULES.items():
        file = str(path.relative_to(SRC))
        for line, target, top, _ in imports(path):
            if not top and (file, target) not in LAZY_ALLOWED:
                lazy.append(f"{file}:{line}: {target}")
    assert not lazy, ("imports of ctde inside function bodies (move them to the module's top, or add them to "
                      "LAZY_ALLOWED with the optional dependency that forces them):\n" + "\n".join(lazy))


def test_allow_list_is_current():
    present = {(str(p.relative_to(SRC)), t) for p in MODULES.values() for _, t, top, _ in imports(p) if not top}
    assert not set(LAZY_ALLOWED) - present, f"stale LAZY_ALLOWED entries: {sorted(set(LAZY_ALLOWED) - present)}"
