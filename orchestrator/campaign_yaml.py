"""The campaign file's YAML loader: safe, bounded, and keeping each key's line.

A campaign file may come from anywhere. Aliases and anchors, explicit tags,
merge keys, nesting past `MAX_DEPTH` and more than `MAX_NODES` nodes are
refused while composing, before any value is built; duplicate keys are
reported with their line. `load_yaml` returns the plain data, the line and
column of every key path, and the duplicate-key problems.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from orchestrator.errors import SpecError, SpecProblem

try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml: its pure-Python parser does the same work
    CParser = object  # type: ignore[misc,assignment]

__all__ = ["MAX_DEPTH", "MAX_NODES", "Marks", "dotted", "load_yaml", "locate"]

#: Deepest nesting a campaign file needs is 6 (waves[0].execution.retries.failed).
MAX_DEPTH: Final = 32
#: YAML nodes in one file (50 waves of 100 thing groups each is about 6,000).
MAX_NODES: Final = 100_000

Marks = dict[tuple[str | int, ...], tuple[int, int]]

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


class _Refused(yaml.MarkedYAMLError):
    """A YAML feature a campaign file may not use (the loader stops at the first one)."""


class _Composer(yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """PyYAML's safe composer and constructor, minus what a hostile file could use.

    Aliases and anchors, explicit tags, nesting past `MAX_DEPTH` and more than
    `MAX_NODES` nodes are refused while composing, event by event, before any
    value is built. The events come from libyaml when PyYAML has it (five times
    faster on a 1 MiB file), else from PyYAML's own parser; both raise the same
    `yaml.YAMLError`s.
    """

    def _init_loader(self) -> None:
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        yaml.composer.Composer.__init__(self)
        self._depth = 0
        self._nodes = 0

    def _refuse(self, event: yaml.Event, problem: str) -> _Refused:
        mark = event.start_mark
        line, column = (mark.line, mark.column) if mark is not None else (0, 0)
        return _Refused(
            problem=problem, problem_mark=yaml.Mark("<campaign>", 0, line, column, None, 0)
        )

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[attr-defined]
        if isinstance(event, yaml.AliasEvent):
            raise self._refuse(
                event,
                f"alias *{event.anchor} refused: campaign files may not use aliases or "
                "anchors; write the value out",
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise self._refuse(
                event,
                f"anchor &{anchor} refused: campaign files may not use aliases or anchors; "
                "write the value out",
            )
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            raise self._refuse(
                event, f"tag {tag} refused: campaign files may not use YAML tags; remove it"
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise self._refuse(event, f"more than {MAX_NODES} values: this is not a campaign file")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self._refuse(
                event, f"nested more than {MAX_DEPTH} levels deep: this is not a campaign file"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _PythonLoader(_Composer, yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """Events from PyYAML's pure-Python reader, scanner and parser."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        self._init_loader()


class _LibyamlLoader(_Composer, CParser):
    """Events from libyaml (PyYAML's C extension)."""

    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        self._init_loader()


_LOADERS: Final[tuple[type[_Composer], ...]] = (
    (_LibyamlLoader, _PythonLoader) if yaml.__with_libyaml__ else (_PythonLoader,)
)


def _collect_marks(
    node: yaml.Node, path: tuple[str | int, ...], marks: Marks, dupes: list[SpecProblem]
) -> None:
    """Record each key's line and column; report keys given twice and merge keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            here = (*path, key)
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key_node.tag == _MERGE_TAG:
                dupes.append(
                    SpecProblem(
                        dotted(here),
                        "merge keys (<<) are refused in campaign files; write the keys out",
                        line=line,
                        column=col,
                    )
                )
            elif key in seen:
                dupes.append(
                    SpecProblem(dotted(here), "key given twice; keep one", line=line, column=col)
                )
            seen.add(key)
            marks[here] = (line, col)
            _collect_marks(value_node, here, marks, dupes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            here = (*path, index)
            marks[here] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _collect_marks(item, here, marks, dupes)


def dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def locate(loc: tuple[str | int, ...], marks: Marks) -> tuple[int, int] | None:
    for cut in range(len(loc), 0, -1):
        found = marks.get(loc[:cut])
        if found is not None:
            return found
    return None


def _yaml_problem(exc: yaml.YAMLError, text: str) -> SpecProblem:
    if isinstance(exc, yaml.reader.ReaderError):
        # A control character or the like: the reader knows the offset, not the line
        # (PyYAML counts characters, libyaml bytes of the UTF-8 text).
        at = int(exc.position)
        if isinstance(exc.character, int):
            what = f"character U+{exc.character:04X}"
            line, start = text.count("\n", 0, at) + 1, text.rfind("\n", 0, at) + 1
        else:
            what = "a control character"
            raw = text.encode("utf-8", "surrogatepass")
            line, start = raw.count(b"\n", 0, at) + 1, raw.rfind(b"\n", 0, at) + 1
        return SpecProblem("", f"{what} is not allowed in YAML; remove it", line, at - start + 1)
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    prefix = "" if isinstance(exc, _Refused) else "not valid YAML: "
    if mark is None:
        return SpecProblem("", f"{prefix}{problem}")
    return SpecProblem("", f"{prefix}{problem}", mark.line + 1, mark.column + 1)


def load_yaml(text: str, source: str) -> tuple[Any, Marks, list[SpecProblem]]:
    """Compose once (marks, refusals), then build plain data from the same nodes."""
    marks: Marks = {}
    dupes: list[SpecProblem] = []
    try:
        loader = _LOADERS[0](text)  # type: ignore[call-arg]
        root = loader.get_single_node()
        if root is None:
            return None, marks, dupes
        _collect_marks(root, (), marks, dupes)
        merges = [p for p in dupes if p.message.startswith("merge keys")]
        if merges:
            raise SpecError(source, tuple(merges))
        return loader.construct_document(root), marks, dupes
    except yaml.YAMLError as exc:
        raise SpecError(source, (_yaml_problem(exc, text),)) from exc
    except (ValueError, OverflowError) as exc:
        # The safe constructor's own refusals: an integer of thousands of digits,
        # an impossible date such as 2026-02-30.
        reason = str(exc).split(";")[0]
        raise SpecError(
            source,
            (
                SpecProblem(
                    "",
                    f"a value cannot be read ({reason}); check the numbers and dates in the file",
                ),
            ),
        ) from exc
