"""Nesting limits for JSON and YAML read from users: parsers recurse per level, so a deep
document would end in RecursionError (gRPC UNKNOWN, a CLI traceback). These checks walk the
text without recursion and refuse it first, naming the limit."""

import yaml

from runtime.specs.common import SpecError

MAX_DEPTH = 64  # far beyond any Seldon spec (parameters, explainer, podSpec)


def check_json_depth(text: str, where: str, limit: int = MAX_DEPTH) -> None:
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise SpecError(f"{where}: nested deeper than {limit} levels")
        elif ch in "]}":
            depth -= 1


def check_yaml_depth(text: str, where: str, limit: int = MAX_DEPTH) -> None:
    """PyYAML's parser is a state machine (its composer is what recurses): count events."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > limit:
                    raise SpecError(f"{where}: nested deeper than {limit} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # the loader reports the syntax error with its position
