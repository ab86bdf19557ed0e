# -*- test-case-name: tests.unit.test_templates -*-
"""Image templates: a small subset of pongo2, applied on create, copy, start and rename.

Supported: `{{ a.b.c }}`, `{{ x|default:"y" }}`, `{% if expr %}...{% else %}...{% endif %}`
with `==`, `!=`, `not`, `and`, `or`, and `{# comments #}`. That covers the
templates images put in `templates/` for hostname, hosts and cloud-init files.
"""

import os
import re

from lxdtx.fsutil import Root

_TOKEN = re.compile(r"({{.*?}}|{%.*?%}|{#.*?#})", re.S)


class TemplateError(ValueError):
    pass


def _lookup(context, dotted):
    value = context
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def _literal(token, context):
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    if token.lstrip("-").isdigit():
        return int(token)
    if token in ("true", "True"):
        return True
    if token in ("false", "False"):
        return False
    return _lookup(context, token)


def _expression(text, context):
    text = text.strip()
    for keyword, combine in ((" or ", any), (" and ", all)):
        if keyword in text:
            return combine(_expression(part, context) for part in text.split(keyword))
    if text.startswith("not "):
        return not _expression(text[4:], context)
    for op in ("==", "!="):
        if op in text:
            left, right = text.split(op, 1)
            equal = str(_literal(left, context)) == str(_literal(right, context))
            return equal if op == "==" else not equal
    return bool(_literal(text, context))


def _value(text, context):
    name, *filters = [p.strip() for p in text.split("|")]
    value = _literal(name, context)
    for f in filters:
        fname, _, arg = f.partition(":")
        if fname == "default" and value in (None, ""):
            value = _literal(arg, context)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(text, context):
    """Render template text with the given context."""
    out = []
    stack = []  # [(emitting, branch taken)]
    emitting = True
    for piece in _TOKEN.split(text):
        if piece.startswith("{#"):
            continue
        if piece.startswith("{%"):
            tag = piece[2:-2].strip()
            word, _, rest = tag.partition(" ")
            if word == "if":
                taken = emitting and _expression(rest, context)
                stack.append((emitting, taken))
                emitting = taken
            elif word == "else":
                if not stack:
                    raise TemplateError("else without if")
                outer, taken = stack[-1]
                emitting = outer and not taken
            elif word == "endif":
                if not stack:
                    raise TemplateError("endif without if")
                emitting, _ = stack.pop()
            else:
                raise TemplateError(f"unsupported template tag: {word}")
            continue
        if not emitting:
            continue
        if piece.startswith("{{"):
            out.append(_value(piece[2:-2], context))
        else:
            out.append(piece)
    if stack:
        raise TemplateError("if without endif")
    return "".join(out)


def load_metadata(container_dir):
    """The container's metadata.yaml (from its image) as a dict, or {}."""
    import yaml  # loaded on first use: the idle daemon does without it

    try:
        with open(os.path.join(container_dir, "metadata.yaml")) as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        return {}


def apply(container_dir, trigger, context, uid=0, gid=0):
    """Render every template whose `when` has `trigger` into the rootfs (blocking: run in a thread).

    Paths are resolved inside the rootfs; a template whose target directory
    does not exist is skipped, as is a `create_only` template whose file exists.
    """
    metadata = load_metadata(container_dir)
    templates = metadata.get("templates") or {}
    if not templates:
        return
    with Root(os.path.join(container_dir, "rootfs")) as root:
        for path, spec in sorted(templates.items()):
            if trigger not in (spec.get("when") or []):
                continue
            source = os.path.join(container_dir, "templates", os.path.basename(spec.get("template", "")))
            try:
                with open(source) as f:
                    text = f.read()
            except OSError:
                continue
            if spec.get("create_only"):
                try:
                    os.close(root.open(path, os.O_PATH))
                    continue
                except FileNotFoundError:
                    pass
            local = dict(context, trigger=trigger, path=path, properties=spec.get("properties") or {})
            try:
                root.write_file(path, render(text, local).encode(), 0o644, uid, gid)
            except FileNotFoundError:
                continue
