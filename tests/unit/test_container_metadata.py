"""A container's metadata.yaml and templates/ on disk: validation, names, links never followed."""

import os
import shutil
import tempfile
import unittest

import yaml

from lxdtx.instance import metadata


class _Directory(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lxdtx-meta-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        os.mkdir(os.path.join(self.dir, "templates"))
        self.outside = tempfile.mkdtemp(prefix="lxdtx-outside-")
        self.addCleanup(shutil.rmtree, self.outside, True)
        self.secret = os.path.join(self.outside, "secret")
        with open(self.secret, "w") as f:
            f.write("host\n")


class ValidateTests(unittest.TestCase):
    """What a PUT body may hold."""

    def test_full(self):
        """A complete body comes back in GET's shape."""
        body = {"architecture": "x86_64", "creation_date": 5, "properties": {"os": "x"},
                "templates": {"/etc/a": {"when": ["start"], "template": "a.tpl"}}}
        self.assertEqual(metadata.validate(body)["templates"]["/etc/a"],
                         {"when": ["start"], "create_only": False, "template": "a.tpl", "properties": {}})

    def test_bad_fields_named(self):
        """Each wrong field is named in the error."""
        for body, field in [({"creation_date": "x"}, "creation_date"), ({"properties": {"a": 1}}, "properties.a"),
                            ({"templates": {"/x": {"when": ["never"]}}}, "templates./x.when"),
                            ({"templates": {"/x": {"template": "../t"}}}, "templates./x.template"),
                            ({"templates": {"/x": {"create_only": "yes"}}}, "templates./x.create_only"),
                            ({"architecture": "pdp11"}, "architecture"), ({"templates": []}, "templates"),
                            ({"expiry_date": 2 ** 70}, "expiry_date"), ({"creation_date": True}, "creation_date")]:
            with self.assertRaises(metadata.MetadataError) as caught:
                metadata.validate(body)
            self.assertIn(field, str(caught.exception))

    def test_names(self):
        """Template names are one path component without control characters."""
        for name in ["", ".", "..", "a/b", "/x", "a\nb", "a\0b", "x" * 256]:
            with self.assertRaises(metadata.MetadataError):
                metadata.check_template_name(name)
        self.assertEqual(metadata.check_template_name("hostname.tpl"), "hostname.tpl")


class FilesTests(_Directory):
    """Reading and writing below the container directory."""

    def test_roundtrip(self):
        """What is written reads back; a missing metadata.yaml reads as empty fields."""
        self.assertEqual(metadata.read_metadata(self.dir)["templates"], {})
        wanted = metadata.validate({"architecture": "x86_64", "creation_date": 1})
        metadata.write_metadata(self.dir, wanted)
        self.assertEqual(metadata.read_metadata(self.dir), wanted)
        with open(os.path.join(self.dir, "metadata.yaml")) as f:
            self.assertEqual(yaml.safe_load(f)["architecture"], "x86_64")
        metadata.write_template(self.dir, "a.tpl", b"x")
        self.assertEqual(metadata.list_templates(self.dir), ["a.tpl"])
        self.assertEqual(metadata.read_template(self.dir, "a.tpl"), b"x")
        metadata.delete_template(self.dir, "a.tpl")
        self.assertRaises(metadata.TemplateMissing, metadata.read_template, self.dir, "a.tpl")
        self.assertRaises(metadata.TemplateMissing, metadata.delete_template, self.dir, "a.tpl")

    def test_metadata_link_replaced(self):
        """A metadata.yaml that is a link is refused on read and replaced, not written through, on write."""
        os.symlink(self.secret, os.path.join(self.dir, "metadata.yaml"))
        self.assertRaises(metadata.MetadataError, metadata.read_metadata, self.dir)
        metadata.write_metadata(self.dir, metadata.validate({}))
        self.assertFalse(os.path.islink(os.path.join(self.dir, "metadata.yaml")))
        with open(self.secret) as f:
            self.assertEqual(f.read(), "host\n")

    def test_templates_dir_link(self):
        """A templates/ that is a link is refused for every use."""
        os.rmdir(os.path.join(self.dir, "templates"))
        os.symlink(self.outside, os.path.join(self.dir, "templates"))
        for call in (lambda: metadata.list_templates(self.dir), lambda: metadata.read_template(self.dir, "secret"),
                     lambda: metadata.write_template(self.dir, "secret", b"x"),
                     lambda: metadata.delete_template(self.dir, "secret")):
            self.assertRaises(metadata.MetadataError, call)
        self.assertEqual(os.listdir(self.outside), ["secret"])

    def test_template_link_not_followed(self):
        """A template that is a link is not listed or read; delete removes the link only."""
        os.symlink(self.secret, os.path.join(self.dir, "templates", "t"))
        self.assertEqual(metadata.list_templates(self.dir), [])
        self.assertRaises(metadata.MetadataError, metadata.read_template, self.dir, "t")
        metadata.delete_template(self.dir, "t")
        self.assertTrue(os.path.exists(self.secret))

    def test_oversized(self):
        """A template larger than the bound is refused and leaves no file."""
        self.assertRaises(metadata.MetadataError, metadata.write_template, self.dir, "big",
                          b"x" * (metadata.MAX_TEMPLATE_SIZE + 1))
        self.assertEqual(os.listdir(os.path.join(self.dir, "templates")), [])

    def test_templates_dir_made(self):
        """A container without templates/ gets one on the first write."""
        os.rmdir(os.path.join(self.dir, "templates"))
        self.assertEqual(metadata.list_templates(self.dir), [])
        metadata.write_template(self.dir, "new", b"y")
        self.assertEqual(metadata.list_templates(self.dir), ["new"])
