"""Reading YAML that people write: plain values only, every key once, and errors that say where.

PyYAML's safe loader refuses ``!!python`` tags; on top of it a key given twice in one mapping is
an error (parsers otherwise keep the last one silently), and every problem is reported with its
1-based line and column. Used by the training configuration and the sweep specs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nclab.errors import InputError

__all__ = ["YAMLProblem", "load_yaml_file", "parse_yaml", "read_utf8"]


def read_utf8(path: Path, name: str) -> str:
    """The text of ``path`` (UTF-8, a BOM allowed); InputError naming ``name`` and the file
    where it is missing or unreadable, and its line and column where it is not UTF-8."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise InputError(f"{name}: {path} {what}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"{name}: cannot read {path}: {err.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - raw.rfind(b"\n", 0, err.start)
        raise InputError(
            f"{path}:{line}:{column}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
            f"save the {name} as UTF-8"
        ) from None


def load_yaml_file(path: Path, name: str) -> Any:
    """The value of the YAML file ``path``; every error one line starting ``path:line:col:``
    (or naming ``name`` when the file cannot be read)."""
    text = read_utf8(path, name)
    try:
        return parse_yaml(text)[0]
    except YAMLProblem as err:
        raise InputError(f"{path}:{err.line}:{err.column}: {err.message}") from None


class YAMLProblem(Exception):
    """Where (1-based line and column) and what is wrong with a YAML text."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


def parse_yaml(text: str) -> tuple[Any, dict[str, yaml.Mark]]:
    """The value of a YAML document (plain values only) and where each key starts (``section``
    and ``section.key``; ``""``: the document)."""
    marks: dict[str, yaml.Mark] = {}
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as err:  # the reader checks every character up front
        raise _reader_problem(text, err) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, marks
        marks[""] = node.start_mark
        _check_keys(loader, node, "", marks, set())
        return loader.construct_document(node), marks
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise YAMLProblem(line, column, _yaml_message(err)) from None
    except yaml.YAMLError as err:
        raise YAMLProblem(1, 1, f"invalid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise YAMLProblem(1, 1, "invalid config: nested too deeply") from None
    finally:
        loader.dispose()


def _reader_problem(text: str, err: yaml.reader.ReaderError) -> YAMLProblem:
    pos = err.position
    line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
    char = err.character if isinstance(err.character, int) else ord(err.character)
    what = "a NUL byte" if char == 0 else f"the control character U+{char:04X}"
    return YAMLProblem(line, column, f"invalid YAML: {what} is not allowed in a YAML text")


def _yaml_message(err: yaml.MarkedYAMLError) -> str:
    problem = err.problem or "invalid YAML"
    if problem.startswith("could not determine a constructor for the tag"):
        tag = problem.rsplit(" ", 1)[-1].replace("tag:yaml.org,2002:", "!!")
        return (
            f"the tag {tag} is not allowed: a config holds plain values (numbers, strings, "
            "lists, mappings)"
        )
    context = f" ({err.context})" if err.context else ""
    return f"invalid YAML: {problem}{context}"


def _check_keys(
    loader: yaml.SafeLoader, node: yaml.Node, path: str, marks: dict[str, yaml.Mark], seen: set[int]
) -> None:
    """Refuse a key given twice in one mapping, naming it and both lines; record key marks."""
    if id(node) in seen:  # an alias of a node already walked (and perhaps itself a cycle)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_keys(loader, item, path, marks, seen)
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[Any, yaml.Node] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            _check_keys(loader, value_node, path, marks, seen)
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:  # construct_document reports the unhashable key where it is
            continue
        dotted = f"{path}.{key}" if path else str(key)
        if key in first:
            mark = key_node.start_mark
            raise YAMLProblem(
                mark.line + 1,
                mark.column + 1,
                f"{dotted}: duplicate key (first given at line "
                f"{first[key].start_mark.line + 1}); give each key once",
            )
        first[key] = key_node
        marks.setdefault(dotted, key_node.start_mark)
        _check_keys(loader, value_node, dotted, marks, seen)
