"""A container's metadata.yaml and templates (`container_edit_metadata`) with the real client:
`lxc config metadata show/edit`, `lxc config template create/edit/show/list/delete`, the
templates applied on start by their `when`, carried by `lxc publish`; names that would
leave templates/ and links planted there refused, the host untouched."""

import os

import pytest
import yaml

GREETING = "hello from {{ container.name }} ({{ trigger }})\n"


def _dir(d, name):
    return os.path.join(d.dir, "storage-pools", "default", "containers", name)


def _read_in(d, name, path):
    pid = d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]
    with open(f"/proc/{pid}/root{path}") as f:
        return f.read()


def _exists_in(d, name, path):
    pid = d.request("GET", f"/1.0/containers/{name}/state").metadata["pid"]
    return os.path.lexists(f"/proc/{pid}/root{path}")


@pytest.fixture
def stopped(busybox_daemon):
    """A stopped busybox container of the module's daemon, removed afterwards."""
    d = busybox_daemon
    name = f"md{os.getpid() % 1000}"
    d.lxc("init", "busybox", name)
    try:
        yield name
    finally:
        d.lxc("delete", "-f", name, check=False)


def test_metadata_show_and_edit(busybox_daemon, stopped):
    """`lxc config metadata show` prints the image's metadata.yaml; `edit` from a pipe rewrites it."""
    d, name = busybox_daemon, stopped
    shown = yaml.safe_load(d.lxc("config", "metadata", "show", name).stdout)
    assert shown["architecture"]
    assert shown["templates"]["/etc/hostname"]["template"] == "hostname.tpl"
    shown["properties"]["description"] = "edited by a test"
    d.lxc("config", "metadata", "edit", name, input=yaml.safe_dump(shown))
    again = yaml.safe_load(d.lxc("config", "metadata", "show", name).stdout)
    assert again["properties"]["description"] == "edited by a test"
    assert again["templates"] == shown["templates"]
    with open(os.path.join(_dir(d, name), "metadata.yaml")) as f:
        assert yaml.safe_load(f)["properties"]["description"] == "edited by a test"
    # Bad YAML content is refused by name and changes nothing.
    shown["templates"]["/etc/x"] = {"when": ["sometimes"], "template": "x.tpl"}
    result = d.lxc("config", "metadata", "edit", name, input=yaml.safe_dump(shown), check=False)
    assert result.returncode != 0 and "templates./etc/x.when" in result.stderr, result.stderr
    assert yaml.safe_load(d.lxc("config", "metadata", "show", name).stdout) == again


def test_metadata_etag(busybox_daemon, stopped):
    """GET sends an ETag of the metadata; a PUT with a stale If-Match gets 412 and changes nothing."""
    d, name = busybox_daemon, stopped
    answer = d.request("GET", f"/1.0/containers/{name}/metadata")
    etag = answer.headers["ETag"]
    body = answer.metadata
    body["properties"]["os"] = "first"
    assert d.request("PUT", f"/1.0/containers/{name}/metadata", body, headers={"If-Match": etag}).status == 200
    body["properties"]["os"] = "second"
    stale = d.request("PUT", f"/1.0/containers/{name}/metadata", body, headers={"If-Match": etag})
    assert stale.status == 412, stale
    now = d.request("GET", f"/1.0/containers/{name}/metadata")
    assert now.metadata["properties"]["os"] == "first" and now.headers["ETag"] != etag
    bad = d.request("PUT", f"/1.0/containers/{name}/metadata", {"creation_date": "yesterday"})
    assert bad.status == 400 and "creation_date" in bad.json["error"], bad
    assert d.request("GET", "/1.0/containers/nosuch/metadata").status == 404
    assert "container_edit_metadata" in d.request("GET", "/1.0").metadata["api_extensions"]


def test_template_commands_apply_and_publish(busybox_daemon, stopped, workdir):
    """Templates made with `lxc config template` apply on start by their `when`, and `lxc
    publish` carries them (and the metadata naming them) into the image."""
    d, name = busybox_daemon, stopped
    # The first start applies the image's `create` templates: past that, a start is only a start.
    d.lxc("start", name)
    d.lxc("stop", "-f", name)
    d.lxc("config", "template", "create", name, "greet.tpl")
    assert d.lxc("config", "template", "show", name, "greet.tpl").stdout == ""
    d.lxc("config", "template", "edit", name, "greet.tpl", input=GREETING)
    assert d.lxc("config", "template", "show", name, "greet.tpl").stdout.rstrip("\n") == GREETING.rstrip("\n")
    assert "greet.tpl" in d.lxc("config", "template", "list", name).stdout
    # Editing again replaces it (the client sends a POST for that too).
    d.lxc("config", "template", "edit", name, "greet.tpl", input="old\n")
    d.lxc("config", "template", "edit", name, "greet.tpl", input=GREETING)
    assert d.lxc("config", "template", "list", name).stdout.count("greet.tpl") == 1

    meta = yaml.safe_load(d.lxc("config", "metadata", "show", name).stdout)
    meta["templates"]["/etc/greeting"] = {"when": ["start"], "template": "greet.tpl"}
    meta["templates"]["/etc/created"] = {"when": ["create"], "template": "greet.tpl"}
    d.lxc("config", "metadata", "edit", name, input=yaml.safe_dump(meta))

    d.lxc("start", name)
    image = f"{name}-pub"
    copy = f"{name}-new"
    try:
        assert _read_in(d, name, "/etc/greeting") == f"hello from {name} (start)\n"
        assert not _exists_in(d, name, "/etc/created")  # `create` only: not on a start
        d.lxc("stop", "-f", name)
        d.lxc("publish", name, "--alias", image)
        d.lxc("launch", image, copy)
        assert _read_in(d, copy, "/etc/created") == f"hello from {copy} (create)\n"
        assert _read_in(d, copy, "/etc/greeting") == f"hello from {copy} (start)\n"
        assert "greet.tpl" in d.lxc("config", "template", "list", copy).stdout
        carried = yaml.safe_load(d.lxc("config", "metadata", "show", copy).stdout)
        assert carried["templates"]["/etc/greeting"]["when"] == ["start"]
    finally:
        d.lxc("delete", "-f", copy, check=False)
        d.lxc("image", "delete", image, check=False)

    d.lxc("config", "template", "delete", name, "greet.tpl")
    assert "greet.tpl" not in d.lxc("config", "template", "list", name).stdout
    result = d.lxc("config", "template", "show", name, "greet.tpl", check=False)
    assert result.returncode != 0
    result = d.lxc("config", "template", "delete", name, "greet.tpl", check=False)
    assert result.returncode != 0


@pytest.mark.parametrize("path", ["../escape", "a/b", "/etc/passwd", "..", ".", "x%0Ay"])
def test_template_names_stay_in_templates(busybox_daemon, stopped, path):
    """A name with `/`, `..` or a control character is refused before any file is touched."""
    d, name = busybox_daemon, stopped
    before = sorted(os.listdir(_dir(d, name)))
    for method in ("POST", "PUT", "GET", "DELETE"):
        answer = d.request(method, f"/1.0/containers/{name}/metadata/templates?path={path}", raw=b"x")
        assert answer.status == 400, (method, answer)
        assert "Invalid template filename" in answer.json["error"], answer
    assert sorted(os.listdir(_dir(d, name))) == before
    assert not os.path.exists(os.path.join(_dir(d, name), "escape"))
    missing = d.request("POST", f"/1.0/containers/{name}/metadata/templates")
    assert missing.status == 400 and missing.json["error"] == "missing path argument", missing


def test_planted_links_not_followed(busybox_daemon, stopped, workdir):
    """A template that is a symlink is neither read nor written through: a PUT replaces the
    link; a templates/ that is a symlink is refused. The host's files stay as they were."""
    d, name = busybox_daemon, stopped
    host = os.path.join(workdir, "host")
    os.mkdir(host)
    secret = os.path.join(host, "secret")
    with open(secret, "w") as f:
        f.write("host secret\n")
    templates = os.path.join(_dir(d, name), "templates")
    os.symlink(secret, os.path.join(templates, "link.tpl"))
    url = f"/1.0/containers/{name}/metadata/templates?path=link.tpl"
    answer = d.request("GET", url)
    assert answer.status == 400 and b"host secret" not in answer.body, answer
    assert d.request("PUT", url, raw=b"new content\n").status == 200
    assert not os.path.islink(os.path.join(templates, "link.tpl"))
    with open(secret) as f:
        assert f.read() == "host secret\n"
    assert d.request("GET", url).body == b"new content\n"

    moved = templates + ".real"
    os.rename(templates, moved)
    os.symlink(host, templates)
    try:
        for method in ("GET", "POST"):
            answer = d.request(method, f"/1.0/containers/{name}/metadata/templates?path=new.tpl", raw=b"x")
            assert answer.status == 400 and "templates is not a directory" in answer.json["error"], answer
        assert d.request("GET", f"/1.0/containers/{name}/metadata/templates").status == 400
        assert sorted(os.listdir(host)) == ["secret"]
    finally:
        os.unlink(templates)
        os.rename(moved, templates)


def test_template_body_bounded(busybox_daemon, stopped):
    """A template body larger than the bound is refused (413) and leaves no file."""
    d, name = busybox_daemon, stopped
    answer = d.request("PUT", f"/1.0/containers/{name}/metadata/templates?path=big.tpl",
                       raw=b"x" * (2 * 1024 * 1024), timeout=60)
    assert answer.status == 413, answer
    assert "big.tpl" not in os.listdir(os.path.join(_dir(d, name), "templates"))
