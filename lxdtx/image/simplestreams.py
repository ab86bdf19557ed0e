# -*- test-case-name: tests.unit.test_image_download -*-
"""Simplestreams image indexes as LXD reads them: `streams/v1/index.json`, then the
products files it names, turned into images with fingerprints, aliases and files.

An index entry of `datatype: image-downloads` and `format: products:1.0` names a
products file. Each product has an architecture, optional comma-separated
`aliases`, and versions named by their date (`20240101_12:00`); a version's items
are files:

* `lxd.tar.xz` (metadata tarball) with the combined fingerprints of the split image
  it makes with each rootfs (`combined_squashfs_sha256`, `combined_rootxz_sha256`;
  `combined_sha256` is the old name of the latter);
* `squashfs` or `root.tar.xz`: the rootfs;
* `lxd_combined.tar.gz`: a unified image, its own sha256 its fingerprint.

A product's aliases name its newest version. Aliases are plain for the host's
architecture, `alias/<arch>` for any other. Pure logic: the fetching is elsewhere.
"""

import dataclasses
import datetime
import posixpath

from lxdtx import architectures

INDEX_PATH = "streams/v1/index.json"
_HEX = set("0123456789abcdef")


class StreamError(ValueError):
    """An index or products file that cannot be used; the message names what is wrong."""


@dataclasses.dataclass(frozen=True)
class File:
    """One file of an image on the server: its path below the server URL, sha256 and size."""

    path: str
    sha256: str
    size: int


@dataclasses.dataclass
class Image:
    """One image a simplestreams server offers."""

    fingerprint: str
    architecture: str
    created_at: datetime.datetime
    meta: File  # the metadata tarball, or the unified tarball
    rootfs: File  # None for a unified image
    properties: dict
    aliases: list = dataclasses.field(default_factory=list)

    @property
    def size(self):
        return self.meta.size + (self.rootfs.size if self.rootfs else 0)


def _is_sha256(value):
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def products_paths(index):
    """The products file paths an index.json names for images."""
    if not isinstance(index, dict) or not isinstance(index.get("index"), dict):
        raise StreamError("index.json has no 'index' map")
    paths = []
    for entry in index["index"].values():
        if not isinstance(entry, dict):
            continue
        if entry.get("datatype") != "image-downloads" or entry.get("format") != "products:1.0":
            continue
        path = entry.get("path")
        if isinstance(path, str) and path:
            paths.append(safe_path(path))
    if not paths:
        raise StreamError("index.json names no image products file")
    return paths


def safe_path(path):
    """A server-relative path, refused if it could leave the server's tree."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "?" in path \
            or "#" in path or any(ord(c) < 33 for c in path):
        raise StreamError(f"invalid path {path!r} in the stream")
    if ".." in posixpath.normpath(path).split("/"):
        raise StreamError(f"invalid path {path!r} in the stream")
    return path


def _file(item):
    sha, size = item.get("sha256"), item.get("size")
    if not _is_sha256(sha) or not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return None
    try:
        return File(safe_path(item.get("path")), sha, size)
    except StreamError:
        return None


def _created(version):
    try:
        return datetime.datetime.strptime(version, "%Y%m%d_%H:%M").replace(tzinfo=datetime.UTC)
    except ValueError:
        pass
    try:
        return datetime.datetime.strptime(version[:8], "%Y%m%d").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def _version_image(product, version, items, architecture):
    """The Image of one version (None when it has no usable files)."""
    files = {}
    for item in items.values() if isinstance(items, dict) else ():
        if isinstance(item, dict) and isinstance(item.get("ftype"), str):
            files[item["ftype"]] = item
    meta_item = files.get("lxd.tar.xz")
    meta = _file(meta_item) if meta_item else None
    fingerprint, rootfs = None, None
    if meta is not None:
        for ftype, keys in (("squashfs", ("combined_squashfs_sha256",)),
                            ("root.tar.xz", ("combined_rootxz_sha256", "combined_sha256"))):
            candidate = _file(files[ftype]) if ftype in files else None
            combined = next((meta_item[k] for k in keys if _is_sha256(meta_item.get(k))), None)
            if candidate is not None and combined:
                fingerprint, rootfs = combined, candidate
                break
    if fingerprint is None and "lxd_combined.tar.gz" in files:
        meta = _file(files["lxd_combined.tar.gz"])
        if meta is not None:
            fingerprint = meta.sha256
    if fingerprint is None:
        return None
    properties = {"architecture": architecture}
    for key, field in (("os", "os"), ("release", "release"), ("variant", "variant"), ("label", "label")):
        if isinstance(product.get(field), str) and product[field]:
            properties[key] = product[field]
    properties["serial"] = version
    description = " ".join(properties[k] for k in ("os", "release", "variant") if k in properties)
    properties["description"] = f"{description} {architecture} ({version})".strip()
    return Image(fingerprint, architecture, _created(version) or datetime.datetime.fromtimestamp(0, datetime.UTC),
                 meta, rootfs, properties)


def images(products, host_architecture=None):
    """Every Image of a products file (a parsed products:1.0 document), with its aliases.

    Products of unknown architectures are left out.
    """
    host = host_architecture or architectures.host()
    if not isinstance(products, dict) or not isinstance(products.get("products"), dict):
        raise StreamError("the products file has no 'products' map")
    found = []
    for product in products["products"].values():
        if not isinstance(product, dict):
            continue
        architecture = architectures.canonical(product.get("arch"))
        versions = product.get("versions")
        if architecture is None or not isinstance(versions, dict):
            continue
        made = []
        for version, content in versions.items():
            if isinstance(version, str) and isinstance(content, dict):
                image = _version_image(product, version, content.get("items"), architecture)
                if image is not None:
                    made.append(image)
        if not made:
            continue
        newest = max(made, key=lambda image: image.created_at)
        names = product.get("aliases")
        for name in (names.split(",") if isinstance(names, str) else ()):
            name = name.strip()
            if name:
                newest.aliases.append(name if architecture == host else f"{name}/{architecture}")
        found.extend(made)
    return found


class Catalog:
    """The images of a server, looked up as `lxc` and the daemon name them."""

    def __init__(self, found):
        self.images = found
        self._by_alias = {}
        for image in sorted(found, key=lambda image: image.created_at):
            for name in image.aliases:
                self._by_alias[name] = image

    def find(self, name):
        """The Image an alias or a (unique prefix of a) fingerprint names, or None."""
        if name in self._by_alias:
            return self._by_alias[name]
        name = name.lower()
        matches = {image.fingerprint: image for image in self.images if image.fingerprint.startswith(name)}
        if len(matches) == 1:
            return next(iter(matches.values()))
        return None
