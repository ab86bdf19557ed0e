# -*- test-case-name: tests.unit.test_templates -*-
"""Image templates: a small subset of pongo2, applied on create, copy, start and rename.

Supported: `{{ a.b.c }}`, `{{ x|default:"y" }}`, `{% if expr %}...{% else %}...{% endif %}`
with `==`, `!=`, `not`, `and`, `or`, and `{# comments #}`. That covers the
templates images put in `templates/` for hostname, hosts and cloud-init files.
"""

import os
import re
import stat

from twisted.logger import Logger

from lxdtx.fsutil import Root, kernel_filesystem, open_beneath, reopen
from lxdtx.image.invalid import ImageFormatError
from lxdtx.image.unpack import read_beneath

log = Logger()

_TOKEN = re.compile(r"({{.*?}}|{%.*?%}|{#.*?#})", re.S)
# A fifo opened for writing without a reader fails at once (ENXIO) instead of waiting.
_WRITE = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY


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


def _load_metadata(dir_fd):
    """The templates of the container's metadata.yaml (from its image), or {}."""
    import yaml  # loaded on first use: the idle daemon does without it

    try:
        raw = read_beneath(dir_fd, "metadata.yaml")
    except FileNotFoundError:
        return {}
    except (OSError, ImageFormatError) as e:
        log.warn("Not applying templates: cannot read metadata.yaml: {error}", error=e)
        return {}
    try:
        doc = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        log.warn("Not applying templates: metadata.yaml does not parse: {error}", error=e)
        return {}
    templates = doc.get("templates") if isinstance(doc, dict) else None
    return templates if isinstance(templates, dict) else {}


def _read_template(dir_fd, spec):
    """The text of a template file of the container's `templates/`, or None."""
    name = os.path.basename(str(spec.get("template") or ""))
    try:
        return read_beneath(dir_fd, f"templates/{name}").decode("utf-8", "replace")
    except (OSError, ImageFormatError) as e:
        log.warn("Template {name!r} skipped: {error}", name=name, error=e)
        return None


def _create_target(root, path):
    """A new regular file `path` inside the root, or None if its directory is missing."""
    try:
        # O_EXCL: a dangling symlink there is left alone rather than followed.
        return root.open(path, _WRITE | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        return None
    except FileExistsError:
        log.warn("Template target {path} is a dangling symlink or appeared meanwhile: skipped", path=path)
        return None


def _open_target(root, path, create_only):
    """An fd to write the template target `path` to, or None when it is to be left alone.

    The target is pinned (O_PATH, resolved inside the root) and looked at before it
    is opened for writing: opening a fifo, a device or a kernel control file could
    hang or have effects of its own, so only a regular file on a data file system is.
    """
    try:
        pinned = root.open(path, os.O_PATH)
    except FileNotFoundError:
        return _create_target(root, path)
    try:
        if create_only:
            return None
        mode = os.fstat(pinned).st_mode
        if not stat.S_ISREG(mode):
            log.warn("Template target {path} is not a regular file ({kind}): skipped", path=path,
                     kind=stat.filemode(mode))
            return None
        kernel = kernel_filesystem(pinned)
        if kernel:
            log.warn("Template target {path} is on the {fs} kernel file system: skipped", path=path, fs=kernel)
            return None
        return reopen(pinned, _WRITE | os.O_TRUNC)
    finally:
        os.close(pinned)


def _write(fd, data, uid, gid):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fchown(fd, uid, gid)
    os.fchmod(fd, 0o644)


def _apply_one(root, path, spec, text, context, uid, gid):
    fd = _open_target(root, path, bool(spec.get("create_only")))
    if fd is None:
        return
    try:
        _write(fd, render(text, context).encode(), uid, gid)
    finally:
        os.close(fd)


def apply(container_dir, trigger, context, uid=0, gid=0):
    """Render every template whose `when` has `trigger` into the rootfs (blocking: run in a thread).

    metadata.yaml and the template files are read below the container directory
    through no symlink; targets are resolved inside the rootfs (which must be a
    real directory). A target whose directory does not exist is skipped, as is a
    `create_only` template whose file exists and, with a warning, one that is not
    a regular file.
    """
    dir_fd = os.open(container_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        templates = _load_metadata(dir_fd)
        if not templates:
            return
        rootfs_fd = open_beneath(dir_fd, "rootfs", os.O_PATH | os.O_DIRECTORY)
        try:
            # The magic link names the directory just opened, whatever `rootfs` is renamed to.
            with Root(f"/proc/self/fd/{rootfs_fd}") as root:
                for path, spec in sorted(templates.items()):
                    if not isinstance(spec, dict) or trigger not in (spec.get("when") or []):
                        continue
                    text = _read_template(dir_fd, spec)
                    if text is None:
                        continue
                    local = dict(context, trigger=trigger, path=path, properties=spec.get("properties") or {})
                    try:
                        _apply_one(root, str(path), spec, text, local, uid, gid)
                    except OSError as e:
                        log.warn("Template target {path} skipped: {error}", path=path, error=e)
        finally:
            os.close(rootfs_fd)
    finally:
        os.close(dir_fd)
