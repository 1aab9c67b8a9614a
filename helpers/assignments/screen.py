"""The static screen of an answer cell, before it runs: :func:`reference_use` says why an answer must not run
because it reaches the course's reference implementation or the checks (``python -m helpers grade``, step 2).

Static and best-effort: it reads the code with ``ast`` and does not run it, so a determined student can get past
it (a crafted pickle does). Since the checks' verdict is computed outside the notebook (see :mod:`.grading`), it is
a second line: it keeps answers from *calling* the reference, which the sandbox cannot (helpers/ ships it).
Used by :mod:`.grading`; tests: tests/test_grading.py.
"""
from __future__ import annotations

import ast
import importlib.util

# what an answer may not touch: the helpers package (but for the parts that describe the world), the checks, and
# the ways to reach them indirectly
ALLOWED_HELPERS_MODULES = {"world", "tokenizer", "model", "plots", "progress"}
PROTECTED_NAMES = {"helpers", "checks"}  # the check cells call checks.*; an answer must not rebind or touch them
REFERENCE_NAMES = {"optimal_policy", "optimal_objective", "wilson_interval", "gain_fraction", "frontier",
                   "load_view", "build_view", "best_of_n_policy", "scorecard", "score_samples",
                   # the tokenizer module is allowed (encode, ids), but its batching is what exercises 2.2 and 2.4 ask for
                   "pad_sequences", "collate_preferences", "encode_pairs"}
BLOCKED_MODULES = {"importlib", "builtins", "sys", "os", "inspect", "gc", "ctypes", "runpy", "IPython", "types",
                   "subprocess", "pkgutil", "imp", "marshal", "code", "codeop", "pickle", "shutil", "operator"}
BLOCKED_ATTRIBUTES = {"sys", "os", "importlib", "builtins", "modules", "inspect", "gc", "ctypes", "subprocess",
                      "operator", "attrgetter", "methodcaller",
                      "f_globals", "f_locals", "f_builtins", "f_back", "gi_frame", "cr_frame", "ag_frame", "tb_frame"}
BLOCKED_CALLS = {"__import__", "eval", "exec", "compile", "getattr", "setattr", "delattr", "globals", "locals",
                 "vars", "get_ipython", "breakpoint", "attrgetter", "methodcaller"}


# ----------------------------------------------------------------------------------------------------------------
# static screening of an answer

def _python_source(code: str) -> str:
    """IPython syntax (magics, shell escapes) as the Python it runs as, so that ``%run`` or ``!cat`` is seen."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(code)
    except Exception:  # IPython missing or the cell is not even IPython: read it as plain Python
        return code


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _refers_outside(value: ast.AST, local: set[str]) -> bool:
    """Whether an expression is (or holds) an object the cell did not create: a name, attribute or subscript whose
    root the cell did not bind, as in ``t = torch`` or ``t = (torch, 1)``."""
    if isinstance(value, (ast.Tuple, ast.List, ast.Set)):
        return any(_refers_outside(v, local) for v in value.elts)
    if isinstance(value, ast.Dict):
        return any(_refers_outside(v, local) for v in value.values if v is not None)
    if isinstance(value, ast.IfExp):
        return _refers_outside(value.body, local) or _refers_outside(value.orelse, local)
    if isinstance(value, ast.BoolOp):
        return any(_refers_outside(v, local) for v in value.values)
    if isinstance(value, (ast.Starred, ast.NamedExpr)):
        return _refers_outside(value.value, local)
    node = value
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return isinstance(node, ast.Name) and node.id not in local


def _aliases(tree: ast.AST, local: set[str]) -> set[str]:
    """Names the cell binds to objects it did not create (``t = torch``, ``def f(t=torch)``, ``with x as t``):
    changing their attributes changes those objects, so they do not count as the cell's own."""
    aliases: set[str] = set()
    while True:
        own = local - aliases
        found = set()
        for node in ast.walk(tree):
            pairs = []
            if isinstance(node, ast.Assign):
                pairs = [(t, node.value) for t in node.targets]
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
                pairs = [(node.target, node.value)]
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                pairs = [(i.optional_vars, i.context_expr) for i in node.items if i.optional_vars is not None]
            elif isinstance(node, ast.arguments):
                positional = node.posonlyargs + node.args
                pairs = list(zip(positional[len(positional) - len(node.defaults):], node.defaults))
                pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None]
            for target, value in pairs:
                if _refers_outside(value, own):
                    for n in ast.walk(target):
                        if isinstance(n, ast.Name):
                            found.add(n.id)
                        elif isinstance(n, ast.arg):
                            found.add(n.arg)
        if found <= aliases:
            return aliases
        aliases |= found


def _installed(module: str) -> bool:
    """Whether ``module`` is importable in the grader's environment (not a file an answer wrote next to itself)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def reference_use(code: str) -> str | None:
    """Why an answer cell must not run (it reaches the course's implementation or the checks), or None.

    Static and best-effort: it reads the code, it does not run it. It flags imports of ``helpers`` (other than the
    world's description), any use of the names ``helpers`` and ``checks``, the names of the reference functions as
    attributes, strings that name them, dunder attributes, the builtins that import or evaluate code by name
    (``__import__``, ``eval``, ``exec``, ``getattr``, ...), modules that reach other modules (``importlib``,
    ``sys``, ``builtins``, ``inspect``, ...), IPython magics and shell escapes, and assignments to attributes of
    objects the cell did not create (patching ``torch`` or ``checks``, also through an alias such as ``t = torch``),
    ``operator.attrgetter``/``methodcaller``, and imports of modules that are not installed (a ``.py`` file the
    answer wrote). Code that does not parse is not flagged: it fails when it runs. Since the checks' verdict is
    computed outside the notebook, this screen is a second line: it keeps answers from *calling* the reference.
    """
    source = _python_source(code)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    docstrings = _docstring_nodes(tree)
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            local.add(node.id)
        elif isinstance(node, ast.arg):
            local.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            local.add(node.name)
    local -= _aliases(tree, local)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root == "helpers":
                    return f"it imports {alias.name}: answers may not use the course's own package"
                if root in BLOCKED_MODULES:
                    return f"it imports {alias.name}, which can reach the course's implementation"
                if (alias.asname or root) in PROTECTED_NAMES:
                    return f"it rebinds the name {alias.asname or root!r}, which the check cells use"
                if not _installed(root):
                    return f"it imports {root}, which is not an installed package (a file the answer wrote?)"
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            root = module.split(".")[0]
            if node.level:
                return "it uses a relative import"
            if root == "helpers":
                parts = module.split(".")
                names = [a.name for a in node.names]
                inner = parts[1] if len(parts) > 1 else None
                if inner not in ALLOWED_HELPERS_MODULES and not (
                        inner is None and all(n in ALLOWED_HELPERS_MODULES for n in names)):
                    return (f"it imports {', '.join(names)} from {module}: calling the course's implementation "
                            f"earns nothing")
            if root in BLOCKED_MODULES:
                return f"it imports from {module}, which can reach the course's implementation"
            if root != "helpers" and not _installed(root):
                return f"it imports from {root}, which is not an installed package (a file the answer wrote?)"
            for alias in node.names:
                if (alias.asname or alias.name) in PROTECTED_NAMES:
                    return f"it rebinds the name {alias.asname or alias.name!r}, which the check cells use"
                if alias.name in REFERENCE_NAMES:
                    return f"it imports {alias.name}: calling the course's implementation earns nothing"
        elif isinstance(node, ast.Name):
            if node.id in PROTECTED_NAMES:
                return f"it uses the name {node.id!r}: answers may not call the course's package or the checks"
            if node.id in BLOCKED_CALLS or node.id.startswith("__"):
                return f"it uses {node.id}, which can reach code by name"
            if node.id in BLOCKED_MODULES and node.id not in local:
                return f"it uses {node.id}, which can reach the course's implementation"
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__"):
                return f"it uses the attribute {node.attr}, which can reach the course's implementation"
            if node.attr in REFERENCE_NAMES:
                return f"it calls {node.attr} from the course's implementation: that earns nothing"
            if node.attr in BLOCKED_ATTRIBUTES:
                return f"it uses the attribute {node.attr}, which can reach the course's implementation"
            if isinstance(node.ctx, (ast.Store, ast.Del)) and _root_name(node) not in local:
                return f"it changes an attribute of {_root_name(node) or 'an object it did not create'}"
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            if PROTECTED_NAMES & set(node.names):
                return "it rebinds a name the check cells use"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
            named = [w for w in ("helpers", *REFERENCE_NAMES) if w in text]
            if named:
                return f"a string in it names {named[0]}, as code that reaches the course's implementation does"
    for name in local & PROTECTED_NAMES:
        return f"it rebinds the name {name!r}, which the check cells use"
    return None
