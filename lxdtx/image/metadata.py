# -*- test-case-name: tests.unit.test_image_metadata -*-
"""`metadata.yaml` of an image: parsing, validation, and the file publish writes."""

import dataclasses

from lxdtx import architectures
from lxdtx.image.invalid import ImageFormatError

TRIGGERS = ("create", "copy", "start", "rename")


def architecture_name(name):
    """The canonical name of an architecture or alias; ImageFormatError if unknown."""
    canonical = architectures.canonical(name)
    if canonical is None:
        raise ImageFormatError(f"Invalid image: unknown architecture {name!r}")
    return canonical


@dataclasses.dataclass
class Template:
    """One entry of `templates:`: which file, from which template, on which triggers."""

    when: list
    template: str
    create_only: bool = False
    properties: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ImageMetadata:
    """The validated content of `metadata.yaml`."""

    architecture: str
    creation_date: int
    expiry_date: int = 0
    properties: dict = dataclasses.field(default_factory=dict)
    templates: dict = dataclasses.field(default_factory=dict)  # path -> Template


def _int(value, key):
    try:
        return int(str(value).strip())
    except ValueError:
        raise ImageFormatError(f"Invalid image: metadata.yaml {key} must be an integer, got {value!r}") from None


def _string_map(value, key):
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ImageFormatError(f"Invalid image: metadata.yaml {key} must be a map")
    result = {}
    for k, v in value.items():
        if isinstance(v, (dict, list)):
            raise ImageFormatError(f"Invalid image: metadata.yaml {key}.{k} must be a string")
        result[str(k)] = "" if v is None else str(v)
    return result


def _template(path, entry):
    if not isinstance(entry, dict):
        raise ImageFormatError(f"Invalid image: metadata.yaml template {path!r} must be a map")
    when = entry.get("when") or []
    if isinstance(when, str):
        when = [when]
    if not isinstance(when, list) or any(w not in TRIGGERS for w in when):
        raise ImageFormatError(
            f"Invalid image: metadata.yaml template {path!r}: when must be a list of {', '.join(TRIGGERS)}")
    name = entry.get("template")
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ImageFormatError(f"Invalid image: metadata.yaml template {path!r} needs a template file name")
    create_only = str(entry.get("create_only", "false")).lower() in ("true", "yes", "on", "1")
    return Template(list(when), name, create_only, _string_map(entry.get("properties"), f"templates.{path}.properties"))


def parse(raw):
    """An ImageMetadata from the bytes of metadata.yaml; ImageFormatError with the reason if invalid."""
    import yaml  # loaded on first use: the idle daemon does without it

    try:
        # BaseLoader keeps every scalar a string, as Go's decoder sees them
        # (`release: 18.10` stays "18.10", not the float 18.1).
        doc = yaml.load(raw, Loader=yaml.BaseLoader)
    except yaml.YAMLError as e:
        raise ImageFormatError(f"Could not parse image metadata.yaml: {e}") from None
    if not isinstance(doc, dict):
        raise ImageFormatError("Could not parse image metadata.yaml: not a map")
    if not doc.get("architecture"):
        raise ImageFormatError("Invalid image: metadata.yaml has no architecture")
    architecture = architecture_name(doc["architecture"])
    creation_date = _int(doc.get("creation_date") or 0, "creation_date")
    if creation_date == 0:
        raise ImageFormatError("Missing creation date.")
    expiry_date = _int(doc.get("expiry_date") or 0, "expiry_date")
    templates = doc.get("templates") or {}
    if not isinstance(templates, dict):
        raise ImageFormatError("Invalid image: metadata.yaml templates must be a map")
    return ImageMetadata(
        architecture=architecture,
        creation_date=creation_date,
        expiry_date=expiry_date,
        properties=_string_map(doc.get("properties"), "properties"),
        templates={path: _template(path, entry) for path, entry in templates.items()},
    )


def for_publish(raw, properties, architecture, now):
    """The metadata.yaml bytes a published image gets.

    `raw` is the container's own metadata.yaml (or None): kept, with `properties`
    replaced when some are given. Without one, a minimal file is written.
    """
    import yaml  # loaded on first use: the idle daemon does without it

    if raw is None:
        doc = {"architecture": architecture, "creation_date": int(now), "properties": dict(properties or {})}
    else:
        try:
            doc = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ImageFormatError(f"Could not parse the container's metadata.yaml: {e}") from None
        if not isinstance(doc, dict):
            raise ImageFormatError("Could not parse the container's metadata.yaml: not a map")
        if properties:
            doc["properties"] = dict(properties)
    text = yaml.safe_dump(doc, default_flow_style=False, sort_keys=True).encode("utf-8")
    parse(text)  # what we publish must import back
    return text


def host_architecture():
    """The canonical name of this host's architecture."""
    return architectures.host()
