"""Reading a profile file: the strict YAML loader (a key written twice is an error), `load_profile`,
and `demo_profile`, the built-in profile of the ``demo`` command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from bridge.config.model import Profile
from bridge.config.parse import parse_profile
from bridge.config.values import kind
from bridge.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: dict[object, yaml.Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key_node.value!r}",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_profile(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Profile:
    """Read, parse and validate the profile file at ``path``. Raises ConfigError."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"profile file {file} not found") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"profile file {file} is not valid UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(
            "", f"cannot read profile file {file}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: PyYAML's str() quotes the source line,
        # which may hold a secret.
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        raise ConfigError("", f"profile file {file} is not valid YAML{where}: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"profile file {file} is not valid YAML: {type(exc).__name__}") from None
    if data is None:
        raise ConfigError(
            "", f'profile file {file} is empty; expected a mapping with at least "sip" and "bot"'
        )
    if not isinstance(data, Mapping):
        raise ConfigError(
            "", f'profile file {file} holds {kind(data)}; expected a mapping with at least "sip" and "bot"'
        )
    return parse_profile(data, name=file.stem, env=env, base_dir=file.parent)


def demo_profile(sip_port: int, bot_url: str) -> Profile:
    """The built-in profile of the ``demo`` command: trunk mode on 127.0.0.1:sip_port."""
    return parse_profile(
        {
            "name": "demo",
            "sip": {"listen": f"127.0.0.1:{sip_port}"},
            "bot": {"url": bot_url.replace("${", "$${")},
        },
        name="demo",
        env={},
    )
