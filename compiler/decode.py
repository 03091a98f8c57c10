"""Text to documents: multi-document YAML or (concatenated) JSON, with positions for errors.

YAML is read with PyYAML's C loader when it is built (10,000 pods must load fast) and the safe
constructors, that is YAML 1.1 as kubectl reads it: unquoted ``yes``/``on``/``y``/``n`` are booleans, and the
validators say so when one lands where a string belongs. A key given twice in one mapping is a
problem: YAML keeps only the last, so a second ``ingress:`` would silently drop the first rules,
and kubectl rejects it too.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import yaml

from compiler.errors import Problem

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Document = tuple[str, Any]
"""(``document N``, decoded value); N counts from 1 within the file."""


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_BOOL = "tag:yaml.org,2002:bool"

# go-yaml v2 (kubectl's decoder, through sigs.k8s.io/yaml) resolves these plain scalars to
# booleans as well; PyYAML's YAML 1.1 table lacks them, so without this a label value ``y``
# would pass here and be refused by ``kubectl apply``.
_SHORT_BOOLS = {"y": True, "Y": True, "n": False, "N": False}


# Tags of plain scalars, by (text, implicit flags); depends only on the (fixed) resolver.
_RESOLVED: dict[tuple[str, tuple[bool, ...]], str] = {}
_CACHE_SIZE = 65536
_CACHE_VALUE_MAX = 64


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The C parser and composer, with a lean constructor of our own.

    PyYAML's constructor spends most of the load time in generic machinery (generators, state
    for recursive objects); this one builds plain dicts, lists and scalars directly, reusing the
    safe constructors for non-string scalars (int, float, bool, null, timestamp), and records
    duplicate keys on the way. Collections reached through an alias are built once and shared,
    as PyYAML does, so alias bombs cost no more than their text.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []
        self._built: dict[int, Any] = {}
        self._open: set[int] = set()  # collections being built: an alias to one is a cycle

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0] and value in _SHORT_BOOLS:
            return _BOOL
        # The C composer asks for every plain scalar's tag; manifests repeat the same keys and
        # values thousands of times, and the resolver's regex scan is the costly part.
        if kind is yaml.ScalarNode and isinstance(value, str) and len(value) <= _CACHE_VALUE_MAX:
            cache_key = (value, tuple(implicit))
            tag = _RESOLVED.get(cache_key)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_RESOLVED) < _CACHE_SIZE:
                    _RESOLVED[cache_key] = tag
            return tag
        return super().resolve(kind, value, implicit)

    def next_document(self) -> Any:
        self._built.clear()
        return self._build(self.get_node())

    def _build(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return node.value
            if node.tag == _BOOL and node.value in _SHORT_BOOLS:
                return _SHORT_BOOLS[node.value]
            construct = self.yaml_constructors.get(node.tag)
            if construct is None or node.tag in (_MAP, _SEQ):
                raise yaml.constructor.ConstructorError(
                    None, None, f"unsupported tag {node.tag!r}", node.start_mark
                )
            return construct(self, node)
        if id(node) in self._open:
            # No Kubernetes object is recursive, and the checks downstream would never end.
            raise yaml.constructor.ConstructorError(
                None, None, "an alias refers to a collection that contains it", node.start_mark
            )
        built = self._built.get(id(node))
        if built is not None:
            return built
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
                built = [self._build(child) for child in node.value]
            elif isinstance(node, yaml.MappingNode) and node.tag == _MAP:
                built = self._mapping(node)
            else:
                raise yaml.constructor.ConstructorError(
                    None, None, f"unsupported tag {node.tag!r}", node.start_mark
                )
        finally:
            self._open.discard(id(node))
        self._built[id(node)] = built
        return built

    def _mapping(self, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                self.flatten_mapping(node)  # `<<: *defaults`; explicit keys win over merged ones
                break
            if isinstance(key_node, yaml.ScalarNode):
                if (key_node.tag, key_node.value) in seen:
                    self.duplicates.append((key_node.start_mark.line + 1, key_node.value))
                seen.add((key_node.tag, key_node.value))
        result: dict[Any, Any] = {}
        build = self._build
        for key_node, value_node in node.value:
            key = build(key_node)
            if type(key) is not str and not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found unhashable key",
                    key_node.start_mark,
                )
            result[key] = build(value_node)
        return result

    # The composer calls these for every node; they serve path resolvers, which we do not use.
    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


def decode(file: str, text: str) -> tuple[list[Document], list[Problem]]:
    """Every document of ``text`` and the problems met reading it (syntax errors stop the file)."""
    text = text.removeprefix("\ufeff")
    if file.lower().endswith(".json"):
        return _json(file, text)
    if text.lstrip().startswith(("{", "[")):
        documents, problems = _json(file, text)
        if not problems:
            return documents, problems
    return _yaml(file, text)


def _yaml(file: str, text: str) -> tuple[list[Document], list[Problem]]:
    documents: list[Document] = []
    problems: list[Problem] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            where = f"document {len(documents) + 1}"
            documents.append((where, loader.next_document()))
            problems.extend(
                Problem(
                    file,
                    where,
                    "",
                    f"line {line}: duplicate key {json.dumps(k)} (only the last would be kept)",
                )
                for line, k in loader.duplicates
            )
            loader.duplicates.clear()
    except yaml.MarkedYAMLError as exc:
        problems.append(Problem(file, f"document {len(documents) + 1}", "", _yaml_message(exc)))
    except yaml.YAMLError as exc:
        problems.append(Problem(file, f"document {len(documents) + 1}", "", f"YAML error: {exc}"))
    finally:
        loader.dispose()
    return documents, problems


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = exc.problem or exc.context or "invalid YAML"
    context = ""
    if exc.context and exc.problem and exc.context_mark:
        context = f" ({exc.context} at line {exc.context_mark.line + 1})"
    kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
    return f"{kind}{where}: {what}{context}"


def _json(file: str, text: str) -> tuple[list[Document], list[Problem]]:
    documents: list[Document] = []
    problems: list[Problem] = []
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for k, v in items:
            if k in result:
                duplicates.append(k)
            result[k] = v
        return result

    decoder = json.JSONDecoder(object_pairs_hook=pairs)
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            break
        where = f"document {len(documents) + 1}"
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            problems.append(
                Problem(
                    file, where, "", f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                )
            )
            break
        documents.append((where, value))
        problems.extend(
            Problem(file, where, "", f"duplicate key {json.dumps(k)} (only the last would be kept)")
            for k in duplicates
        )
        duplicates.clear()
    return documents, problems
