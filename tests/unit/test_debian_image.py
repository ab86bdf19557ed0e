"""The Debian image recipe: which mirror the host's apt uses, metadata, cache keys."""

from lxdtx.image import debian




def test_deb822_sources(tmp_path):
    """A deb822 `.sources` stanza naming the suite gives its first URI; deb-src is ignored."""
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n")
    assert debian.host_mirror("bookworm", sources=(str(tmp_path / "none"), str(d))) == "http://mirror.example/debian"


def test_one_line_sources(tmp_path):
    """`deb [options] URI SUITE` lines of sources.list; other suites and comments are skipped."""
    path = tmp_path / "sources.list"
    path.write_text("# deb http://old.example/debian bookworm main\n"
                    "deb http://other.example/debian trixie main\n"
                    "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n")
    assert debian.host_mirror("bookworm", sources=(str(path),)) == "http://mirror.example/debian"


def test_default_mirror(tmp_path):
    """No source for the suite: deb.debian.org."""
    assert debian.host_mirror("bookworm", sources=(str(tmp_path),)) == debian.DEFAULT_MIRROR


def test_metadata_and_cache_key():
    """The metadata names the release and templates /etc/hostname; the cache key follows the mirror."""
    meta = debian.image_metadata("bookworm", "x86_64", 1700000000)
    assert meta["properties"]["os"] == "debian" and "12" in meta["properties"]["description"]
    assert meta["templates"]["/etc/hostname"]["template"] == "hostname.tpl"
    a = debian.cache_key("bookworm", "x86_64", "http://a/debian")
    assert a == debian.cache_key("bookworm", "x86_64", "http://a/debian")
    assert a != debian.cache_key("bookworm", "x86_64", "http://b/debian")
    assert debian.cached_path(mirror="http://a/debian", arch="x86_64", cache_dir="/c").startswith("/c/debian12-x86_64-")
