"""Python scope resolution for renaming: which binding every name occurrence refers to.

Hand-written because ``symtable`` gives the kind of each symbol per scope but not the AST nodes of each
occurrence, and renaming needs both. Scopes are the module, classes, functions/lambdas and comprehensions.
Resolution follows the language: a name bound in a function (assigned, a parameter, a loop or ``with``
target, ``except ... as``) is local to it unless declared ``global``/``nonlocal``; a free name resolves to the
nearest enclosing function scope that binds it (class bodies are skipped), else to the module/builtins.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
DYNAMIC = frozenset({"locals", "vars", "eval", "exec", "dir"})
"""Calls that read a frame's variables by name: scopes calling them keep their names."""


@dataclass(eq=False)
class Scope:
    """One scope. ``renameable`` bindings are those bound only by assignment-like forms and params."""

    node: ast.AST
    kind: str  # module | class | function | comprehension
    parent: "Scope | None"
    bound: set[str] = field(default_factory=set)
    fixed: set[str] = field(default_factory=set)  # bound by def/class/import/match/nonlocal-referenced: never renamed
    declared_global: set[str] = field(default_factory=set)
    declared_nonlocal: set[str] = field(default_factory=set)
    dynamic: bool = False

    def renameable(self) -> set[str]:
        if self.kind not in ("function", "comprehension") or self.dynamic:
            return set()
        return self.bound - self.fixed - self.declared_global - self.declared_nonlocal - {"__class__"}


@dataclass(frozen=True, eq=False)
class Occurrence:
    """A name at one place: ``node`` is a Name, an arg, or an ExceptHandler (its ``name``)."""

    scope: Scope
    name: str
    node: ast.AST


class _Collector(ast.NodeVisitor):
    def __init__(self, tree: ast.Module):
        self.module = Scope(tree, "module", None)
        self.scopes = [self.module]
        self.occurrences: list[Occurrence] = []
        self.current = self.module

    def _enter(self, node: ast.AST, kind: str) -> Scope:
        scope = Scope(node, kind, self.current)
        self.scopes.append(scope)
        return scope

    def _in(self, scope: Scope, body) -> None:
        saved, self.current = self.current, scope
        for item in body:
            self.visit(item)
        self.current = saved

    def _bind_fixed(self, name: str) -> None:
        self.current.bound.add(name)
        self.current.fixed.add(name)

    # --- scopes ---------------------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for deco in node.decorator_list:
            self.visit(deco)
        self._defaults(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        self._bind_fixed(node.name)
        scope = self._enter(node, "function")
        self._params(scope, node.args)
        self._in(scope, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._defaults(node.args)
        scope = self._enter(node, "function")
        self._params(scope, node.args, annotations=False)
        self._in(scope, [node.body])

    def _defaults(self, args: ast.arguments) -> None:
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(default)

    def _params(self, scope: Scope, args: ast.arguments, annotations: bool = True) -> None:
        for arg in args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]:
            if annotations and arg.annotation is not None:
                self.visit(arg.annotation)  # evaluated in the enclosing scope
            scope.bound.add(arg.arg)
            self.occurrences.append(Occurrence(scope, arg.arg, arg))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for item in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(item)
        self._bind_fixed(node.name)
        self._in(self._enter(node, "class"), node.body)

    def _comprehension(self, node, elements) -> None:
        generators = node.generators
        self.visit(generators[0].iter)  # the first iterable is evaluated outside
        scope = self._enter(node, "comprehension")
        saved, self.current = self.current, scope
        for number, gen in enumerate(generators):
            if number:
                self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        for element in elements:
            self.visit(element)
        self.current = saved

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])

    # --- bindings and uses ----------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.current.bound.add(node.id)
        self.occurrences.append(Occurrence(self.current, node.id, node))

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        target = self.current
        while target.kind == "comprehension":  # PEP 572: binds in the enclosing non-comprehension scope
            target = target.parent  # type: ignore[assignment]
        target.bound.add(node.target.id)
        if target.kind == "class":
            target.fixed.add(node.target.id)
        self.occurrences.append(Occurrence(target, node.target.id, node.target))

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.current.bound.add(node.name)
            self.occurrences.append(Occurrence(self.current, node.name, node))
        for stmt in node.body:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self._bind_fixed(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_Global(self, node: ast.Global) -> None:
        self.current.declared_global.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.current.declared_nonlocal.update(node.names)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self._bind_fixed(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._bind_fixed(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self._bind_fixed(node.rest)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in DYNAMIC:
            scope = self.current
            while scope is not None:  # eval/locals see the whole chain of enclosing frames' names
                scope.dynamic = True
                scope = scope.parent
        self.generic_visit(node)


def _resolve(scope: Scope, name: str, module: Scope) -> Scope:
    """The scope whose binding ``name`` refers to when used in ``scope``."""
    if name in scope.declared_global:
        return module
    if name in scope.bound and name not in scope.declared_nonlocal:
        return scope
    parent = scope.parent
    while parent is not None:
        if parent.kind != "class" and parent.kind != "module":
            if name in parent.declared_global:
                return module
            if name in parent.bound and name not in parent.declared_nonlocal:
                return parent
        parent = parent.parent
    return module


@dataclass
class Resolved:
    """Scopes and name occurrences of a module, each occurrence with the scope that binds it."""

    module: Scope
    scopes: list[Scope]
    occurrences: list[tuple[Occurrence, Scope]]

    def local_bindings(self) -> list[tuple[Scope, str]]:
        """Renameable ``(scope, name)`` bindings, in order of first occurrence; names that some nested scope
        declares ``nonlocal`` are left out (the declaration holds the name without a position)."""
        nonlocal_names = {n for s in self.scopes for n in s.declared_nonlocal}
        seen: dict[tuple[int, str], tuple[Scope, str]] = {}
        for occ, owner in self.occurrences:
            if occ.name in owner.renameable() and occ.name not in nonlocal_names:
                seen.setdefault((id(owner), occ.name), (owner, occ.name))
        return list(seen.values())


def resolve(tree: ast.Module) -> Resolved:
    """Resolve every Name/arg/except-name occurrence of ``tree`` to its binding scope."""
    collector = _Collector(tree)
    for stmt in tree.body:
        collector.visit(stmt)
    module = collector.module
    return Resolved(module, collector.scopes, [(o, _resolve(o.scope, o.name, module)) for o in collector.occurrences])
