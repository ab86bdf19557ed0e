# -*- test-case-name: tests.unit.test_templates -*-
"""Image templates (pongo2 syntax as LXD images write it), applied on create, copy, start and rename.

Templates come with images and are untrusted: they run in Jinja2's sandbox, which
refuses access to internals (`__class__`, `__subclasses__`...), with bounded output,
time and ranges. pongo2's `|filter:arg` is rewritten to Jinja2's `|filter(arg)`.
"""

import os
import re
import stat
import time

import jinja2
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from twisted.logger import Logger

from lxdtx.fsutil import Root, kernel_filesystem, open_beneath, reopen
from lxdtx.image.invalid import ImageFormatError
from lxdtx.image.unpack import read_beneath

log = Logger()

# A fifo opened for writing without a reader fails at once (ENXIO) instead of waiting.
_WRITE = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY

# Image templates are untrusted: what one may produce and how long it may take.
MAX_OUTPUT = 1 << 20
MAX_SECONDS = 2.0
MAX_RANGE = 10000
# pongo2 passes a filter's argument after a colon (`x|default:"y"`); Jinja2 calls it.
_PONGO_FILTER = re.compile(r"""\|\s*(\w+)\s*:\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[\w.]+)""")
_TAG = re.compile(r"({{.*?}}|{%.*?%})", re.S)


class TemplateError(ValueError):
    pass


def _pongo_to_jinja(text):
    """Rewrite pongo2's `|filter:arg` inside tags into Jinja2's `|filter(arg)`."""
    return _TAG.sub(lambda m: _PONGO_FILTER.sub(r"|\1(\2)", m.group(0)), text)


def _pongo_default(value, default="", boolean=True):
    """pongo2's default: empty values (None, "", 0, empty containers) are replaced."""
    if value is None or isinstance(value, jinja2.Undefined) or (boolean and not value):
        return default
    return value


def _finalize(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class _Sandbox(SandboxedEnvironment):
    """The sandbox, refusing unsafe access outright rather than rendering it as empty."""

    def unsafe_undefined(self, obj, attribute):
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


def _environment():
    env = _Sandbox(autoescape=False, undefined=jinja2.ChainableUndefined,
                               finalize=_finalize, keep_trailing_newline=True)
    env.filters["default"] = _pongo_default
    return env


def render(text, context, max_output=MAX_OUTPUT, max_seconds=MAX_SECONDS, env=None):
    """Render template text with the given context in Jinja2's sandbox, bounded in size and time.

    `env`: a sandbox from `_environment()` to reuse over the templates of one `apply`.
    """
    if env is None:
        env = _environment()
    deadline = time.monotonic() + max_seconds

    def check():
        if time.monotonic() > deadline:
            raise TemplateError(f"template took longer than {max_seconds:g}s")

    def bounded_range(*args):
        r = range(*args)
        if len(r) > MAX_RANGE:
            raise TemplateError(f"range of more than {MAX_RANGE} items")
        for i in r:
            check()
            yield i

    try:
        template = env.from_string(_pongo_to_jinja(text), globals={"range": bounded_range})
        out, size = [], 0
        for piece in template.generate(context):
            size += len(piece)
            if size > max_output:
                raise TemplateError(f"template output larger than {max_output} bytes")
            check()
            out.append(piece)
    except TemplateError:
        raise  # our own bounds, already worded
    except SecurityError as e:
        raise TemplateError(f"template not allowed: {e}") from None
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error at line {e.lineno}: {e.message}") from None
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError,
            RecursionError, MemoryError) as e:
        raise TemplateError(f"template failed: {e}") from None
    return "".join(out)


def _config_getter(config):
    """LXD's `config_get(key, default)`: the container's value of key, or default when unset."""
    def config_get(key, default=None):
        value = config.get(key)
        return default if value in (None, "") else value
    return config_get


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


def _apply_one(root, path, spec, text, context, uid, gid, env):
    fd = _open_target(root, path, bool(spec.get("create_only")))
    if fd is None:
        return
    try:
        _write(fd, render(text, context, env=env).encode(), uid, gid)
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
                env = _environment()
                for path, spec in sorted(templates.items()):
                    if not isinstance(spec, dict) or trigger not in (spec.get("when") or []):
                        continue
                    text = _read_template(dir_fd, spec)
                    if text is None:
                        continue
                    local = dict(context, trigger=trigger, path=path, properties=spec.get("properties") or {},
                                 config_get=_config_getter(context.get("config") or {}))
                    try:
                        _apply_one(root, str(path), spec, text, local, uid, gid, env)
                    except OSError as e:
                        log.warn("Template target {path} skipped: {error}", path=path, error=e)
        finally:
            os.close(rootfs_fd)
    finally:
        os.close(dir_fd)
