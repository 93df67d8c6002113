"""Options declared once and shared by several typer commands: groups of options as dataclasses.

A group is a frozen dataclass deriving from :class:`OptionGroup` whose fields are declared the typer way,
``steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")] = 1000``. A command asks for a group by
a keyword-only parameter annotated with it, and :func:`shared_options` turns the group's fields into options of
that command (after its own, so ``--help`` lists them all) and hands the command one instance per group::

    @app.command()
    @shared_options(steps=typer.Option(150, "--steps", help="Optimizer steps."))  # this command's own default
    def sql(pool: Path = typer.Argument(...), *, run: RunOptions, optim: OptimOptions) -> None:
        ... optim.steps ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar, get_type_hints

from typer.models import OptionInfo

F = TypeVar("F", bound=Callable[..., Any])


class OptionGroup:
    """Base of the option groups (frozen dataclasses of ``Annotated[type, typer.Option(...)]`` fields)."""


def _group_of(hint: Any) -> type[OptionGroup] | None:
    return hint if isinstance(hint, type) and issubclass(hint, OptionGroup) else None


def _group_parameters(group: type[OptionGroup], overrides: dict[str, OptionInfo]) -> list[inspect.Parameter]:
    """One keyword-only parameter per field of ``group``; an override replaces the field's option and default."""
    annotated = get_type_hints(group, include_extras=True)
    plain = get_type_hints(group)
    parameters = []
    for item in fields(group):  # type: ignore[arg-type]
        if item.name in overrides:
            parameter = inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=overrides[item.name],
                                          annotation=plain[item.name])
        else:
            default = item.default if item.default is not MISSING else inspect.Parameter.empty
            parameter = inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                          annotation=annotated[item.name])
        parameters.append(parameter)
    return parameters


def shared_options(**overrides: OptionInfo) -> Callable[[F], F]:
    """Decorate a typer command whose keyword-only parameters are annotated with option groups (see the module).

    ``overrides`` maps a field name to the ``typer.Option(default, *flags, help=...)`` this command declares instead
    (another default, help text or flag names). The wrapped command has the command's own parameters, then each
    group's fields, as its signature; called with them, it calls the command with one group instance per group.

    Raises:
        TypeError: an override names no field of the command's groups, or two groups share a field name.
    """

    def decorate(command: F) -> F:
        hints = get_type_hints(command, include_extras=True)
        own: list[inspect.Parameter] = []
        groups: dict[str, type[OptionGroup]] = {}
        for parameter in inspect.signature(command).parameters.values():
            group = _group_of(hints.get(parameter.name))
            if group is not None:
                groups[parameter.name] = group
            else:
                own.append(parameter.replace(annotation=hints.get(parameter.name, parameter.annotation),
                                             kind=inspect.Parameter.KEYWORD_ONLY))
        added = [p for group in groups.values() for p in _group_parameters(group, overrides)]
        names = [p.name for p in own + added]
        if len(names) != len(set(names)) or set(overrides) - set(names):
            raise TypeError(f"{command.__name__}: repeated options or overrides of no option: {sorted(overrides)}")

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            for name, group in groups.items():
                values[name] = group(**{item.name: values.pop(item.name) for item in fields(group)})  # type: ignore[arg-type]
            return command(**values)

        signature = inspect.Signature(own + added)
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return wrapper  # type: ignore[return-value]

    return decorate
