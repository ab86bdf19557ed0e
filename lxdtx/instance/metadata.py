# -*- test-case-name: tests.unit.test_container_metadata,tests.integration.test_container_metadata -*-
"""A container's own `metadata.yaml` and `templates/` (`container_edit_metadata`).

Both live in the container's directory beside `rootfs/`, where the image (or a
backup) put them, and travel with the container into `lxc publish`. They were
shaped by untrusted content, so nothing here follows a link: paths are opened
below the directory with no symlink resolved, and files are replaced by a
rename rather than written through. Every function here blocks: callers run
them in a thread.
"""

import os
import secrets
import stat

from lxdtx.fsutil import open_beneath, reopen
from lxdtx.image import metadata as image_metadata

# Template files are read back whole when they are applied (`templates.apply`).
MAX_TEMPLATE_SIZE = 1024 * 1024
MAX_METADATA_SIZE = 1024 * 1024
MAX_NAME = 255
_TEMPORARY = ".lxdtx-new-"
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY


class MetadataError(ValueError):
    """Bad metadata or a bad template name: the text says which field or name."""


class TemplateMissing(LookupError):
    pass


# -- metadata.yaml ------------------------------------------------------------------

def _int(value, key):
    if isinstance(value, bool) or not isinstance(value, int):
        raise MetadataError(f"Invalid value for \"{key}\": must be an integer")
    if not -(2 ** 63) <= value < 2 ** 63:
        raise MetadataError(f"Invalid value for \"{key}\": out of range")
    return value


def _string(value, key):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MetadataError(f"Invalid value for \"{key}\": must be a string")
    return value


def _string_map(value, key):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MetadataError(f"Invalid value for \"{key}\": must be a map")
    for k, v in value.items():
        if not isinstance(v, str):
            raise MetadataError(f"Invalid value for \"{key}.{k}\": must be a string")
    return dict(value)


def _template_entry(path, entry):
    key = f"templates.{path}"
    if not path or "\0" in path:
        raise MetadataError(f"Invalid value for \"templates\": {path!r} is not a file path")
    if not isinstance(entry, dict):
        raise MetadataError(f"Invalid value for \"{key}\": must be a map")
    when = entry.get("when")
    if when is None:
        when = []
    if not isinstance(when, list) or any(w not in image_metadata.TRIGGERS for w in when):
        raise MetadataError(f"Invalid value for \"{key}.when\": must be a list of "
                            f"{', '.join(image_metadata.TRIGGERS)}")
    create_only = entry.get("create_only", False)
    if create_only is None:
        create_only = False
    if not isinstance(create_only, bool):
        raise MetadataError(f"Invalid value for \"{key}.create_only\": must be a boolean")
    template = _string(entry.get("template"), f"{key}.template")
    check_template_name(template, f"{key}.template")
    return {"when": list(when), "create_only": create_only, "template": template,
            "properties": _string_map(entry.get("properties"), f"{key}.properties")}


def validate(body):
    """The metadata a `PUT .../metadata` body describes, in the shape GET shows; MetadataError naming the field."""
    templates = body.get("templates")
    if templates is None:
        templates = {}
    if not isinstance(templates, dict):
        raise MetadataError("Invalid value for \"templates\": must be a map")
    architecture = _string(body.get("architecture"), "architecture")
    if architecture:
        try:
            image_metadata.architecture_name(architecture)
        except ValueError:
            raise MetadataError(f"Invalid value for \"architecture\": unknown architecture {architecture!r}")
    return {
        "architecture": architecture,
        "creation_date": _int(body.get("creation_date") or 0, "creation_date"),
        "expiry_date": _int(body.get("expiry_date") or 0, "expiry_date"),
        "properties": _string_map(body.get("properties"), "properties"),
        "templates": {path: _template_entry(path, entry) for path, entry in templates.items()},
    }


def _from_file(doc):
    """What GET shows of a parsed metadata.yaml: its known fields, leniently (as LXD decodes it)."""
    def number(value):
        try:
            return int(str(value).strip() or 0)
        except ValueError:
            return 0

    def strings(value):
        return {str(k): "" if v is None else str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    templates = {}
    for path, entry in (doc.get("templates") or {}).items() if isinstance(doc.get("templates"), dict) else ():
        if not isinstance(entry, dict):
            continue
        when = entry.get("when") or []
        templates[str(path)] = {
            "when": [str(w) for w in (when if isinstance(when, list) else [when])],
            "create_only": str(entry.get("create_only", "false")).lower() in ("true", "yes", "on", "1"),
            "template": str(entry.get("template") or ""),
            "properties": strings(entry.get("properties")),
        }
    return {
        "architecture": str(doc.get("architecture") or ""),
        "creation_date": number(doc.get("creation_date")),
        "expiry_date": number(doc.get("expiry_date")),
        "properties": strings(doc.get("properties")),
        "templates": templates,
    }


def _read(dir_fd, path, limit):
    """The bytes of the regular file `path` below `dir_fd` (no link followed), or None when absent."""
    try:
        pinned = open_beneath(dir_fd, path, os.O_PATH | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        mode = os.fstat(pinned).st_mode
        if not stat.S_ISREG(mode):
            raise MetadataError(f"{path} is {'a symlink' if stat.S_ISLNK(mode) else 'not a regular file'}")
        fd = reopen(pinned, _READ)
    finally:
        os.close(pinned)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise MetadataError(f"{path} is larger than {limit} bytes")
    return data


def _open_dir(container_dir):
    return os.open(container_dir, _DIR_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC)


def read_metadata(container_dir):
    """The container's metadata.yaml as GET shows it (empty fields when it has none)."""
    import yaml  # loaded on first use: the idle daemon does without it

    fd = _open_dir(container_dir)
    try:
        raw = _read(fd, "metadata.yaml", MAX_METADATA_SIZE)
    finally:
        os.close(fd)
    doc = {}
    if raw is not None:
        try:
            # Every scalar a string, as Go's decoder sees them; _from_file types them.
            doc = yaml.load(raw, Loader=yaml.BaseLoader) or {}
        except yaml.YAMLError as e:
            raise MetadataError(f"metadata.yaml does not parse: {e}")
        if not isinstance(doc, dict):
            raise MetadataError("metadata.yaml is not a map")
    return _from_file(doc)


def _replace(dir_fd, name, data, mode=0o644):
    """Write `name` below `dir_fd` as a new file renamed over the old one: a link there is replaced, never followed."""
    temporary = f"{_TEMPORARY}{secrets.token_hex(6)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


def write_metadata(container_dir, metadata):
    """Replace the container's metadata.yaml by the validated `metadata` (from `validate`)."""
    import yaml

    text = yaml.safe_dump(metadata, default_flow_style=False, sort_keys=True).encode("utf-8")
    fd = _open_dir(container_dir)
    try:
        _replace(fd, "metadata.yaml", text)
    finally:
        os.close(fd)


# -- templates/ -----------------------------------------------------------------------

def check_template_name(name, what="path"):
    """A template file name stays in `templates/`: one path component, not `.` or `..`, no
    control characters (the name goes back in a Content-Disposition header)."""
    if (not name or "/" in name or name in (".", "..") or name.startswith(_TEMPORARY)
            or any(ord(c) < 0x20 or c == "\x7f" for c in name)
            or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME):
        raise MetadataError(f"Invalid template filename for \"{what}\": {name!r}")
    return name


def _templates_dir(container_dir, create):
    """An O_PATH fd of the container's `templates/` (made when `create`), or None when it has none."""
    fd = _open_dir(container_dir)
    try:
        if create:
            try:
                os.mkdir("templates", 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        try:
            return open_beneath(fd, "templates", _DIR_FLAGS)
        except FileNotFoundError:
            return None
        except OSError:
            raise MetadataError("templates is not a directory")
    finally:
        os.close(fd)


def list_templates(container_dir):
    """Names of the regular files in the container's `templates/`, sorted."""
    fd = _templates_dir(container_dir, create=False)
    if fd is None:
        return []
    try:
        names = []
        listing = reopen(fd, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for entry in os.scandir(listing):
                if entry.is_file(follow_symlinks=False) and not entry.name.startswith(_TEMPORARY):
                    names.append(entry.name)
        finally:
            os.close(listing)
        return sorted(names)
    finally:
        os.close(fd)


def read_template(container_dir, name):
    """The bytes of template `name`; TemplateMissing when there is none."""
    check_template_name(name)
    fd = _templates_dir(container_dir, create=False)
    if fd is None:
        raise TemplateMissing(name)
    try:
        data = _read(fd, name, MAX_TEMPLATE_SIZE)
    finally:
        os.close(fd)
    if data is None:
        raise TemplateMissing(name)
    return data


def write_template(container_dir, name, data):
    """Create or replace template `name` with `data`."""
    check_template_name(name)
    if len(data) > MAX_TEMPLATE_SIZE:
        raise MetadataError(f"Template larger than {MAX_TEMPLATE_SIZE} bytes")
    fd = _templates_dir(container_dir, create=True)
    try:
        if _lexists(fd, name) and stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            raise MetadataError(f"Template {name!r} is a directory")
        _replace(fd, name, data)
    finally:
        os.close(fd)


def delete_template(container_dir, name):
    """Remove template `name` (a link of that name is removed, not followed); TemplateMissing when absent."""
    check_template_name(name)
    fd = _templates_dir(container_dir, create=False)
    if fd is None:
        raise TemplateMissing(name)
    try:
        if not _lexists(fd, name):
            raise TemplateMissing(name)
        if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            raise MetadataError(f"Template {name!r} is a directory")
        os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def _lexists(dir_fd, name):
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
