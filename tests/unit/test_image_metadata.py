"""`metadata.yaml`: parsing, validation and the file a publish writes."""

import yaml
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import architectures
from lxdtx.image import metadata
from lxdtx.image.invalid import ImageFormatError

GOOD = b"""\
architecture: amd64
creation_date: 1424284563
expiry_date: 1500000000
properties:
  description: Busybox x86_64
  os: busybox
  release: 18.10
templates:
  /etc/hostname:
    when: [create, copy, start, rename]
    template: hostname.tpl
    create_only: true
    properties:
      key: value
"""


class ParseTests(SynchronousTestCase):
    """What a valid file gives, and why an invalid one is refused."""

    def test_fields(self):
        """Architecture aliases become canonical names; numbers stay the text they were."""
        meta = metadata.parse(GOOD)
        self.assertEqual(meta.architecture, "x86_64")
        self.assertEqual(meta.creation_date, 1424284563)
        self.assertEqual(meta.expiry_date, 1500000000)
        self.assertEqual(meta.properties, {"description": "Busybox x86_64", "os": "busybox", "release": "18.10"})
        template = meta.templates["/etc/hostname"]
        self.assertEqual(template.when, ["create", "copy", "start", "rename"])
        self.assertEqual(template.template, "hostname.tpl")
        self.assertTrue(template.create_only)
        self.assertEqual(template.properties, {"key": "value"})

    def test_minimal(self):
        """Only architecture and creation_date are required."""
        meta = metadata.parse(b"architecture: i386\ncreation_date: 1\n")
        self.assertEqual((meta.architecture, meta.expiry_date, meta.properties, meta.templates),
                         ("i686", 0, {}, {}))

    def test_architectures(self):
        """Every alias of the reference maps to its canonical name."""
        for name, aliases in architectures.ALIASES.items():
            for alias in (name, *aliases):
                self.assertEqual(metadata.architecture_name(alias), name)

    def test_refusals(self):
        """Each broken file gets a message naming what is wrong."""
        cases = {
            b"creation_date: 1\n": "no architecture",
            b"architecture: vax\ncreation_date: 1\n": "unknown architecture 'vax'",
            b"architecture: x86_64\n": "Missing creation date.",
            b"architecture: x86_64\ncreation_date: 0\n": "Missing creation date.",
            b"architecture: x86_64\ncreation_date: soon\n": "creation_date must be an integer",
            b"architecture: [\n": "Could not parse image metadata.yaml",
            b"- a list\n": "not a map",
            b"architecture: x86_64\ncreation_date: 1\nproperties: [a]\n": "properties must be a map",
            b"architecture: x86_64\ncreation_date: 1\ntemplates:\n  /x: {when: [boot], template: t}\n": "when must",
            b"architecture: x86_64\ncreation_date: 1\ntemplates:\n  /x: {when: [start], template: ../t}\n": "template",
        }
        for raw, message in cases.items():
            with self.assertRaises(ImageFormatError) as cm:
                metadata.parse(raw)
            self.assertIn(message, str(cm.exception), raw)


class ForPublishTests(SynchronousTestCase):
    """The metadata.yaml of a published image."""

    def test_generated(self):
        """Without a file: architecture, creation date and the given properties."""
        doc = yaml.safe_load(metadata.for_publish(None, {"os": "x"}, "x86_64", 1700000000.5))
        self.assertEqual(doc, {"architecture": "x86_64", "creation_date": 1700000000, "properties": {"os": "x"}})

    def test_kept_with_properties_replaced(self):
        """The container's file is kept; given properties replace its properties whole."""
        doc = yaml.safe_load(metadata.for_publish(GOOD, {"os": "mine"}, "aarch64", 1))
        self.assertEqual(doc["properties"], {"os": "mine"})
        self.assertEqual(doc["creation_date"], 1424284563)
        self.assertEqual(doc["architecture"], "amd64")
        self.assertIn("/etc/hostname", doc["templates"])

    def test_kept_without_properties(self):
        """No properties given: the file's own stay."""
        doc = yaml.safe_load(metadata.for_publish(GOOD, {}, "x86_64", 1))
        self.assertEqual(doc["properties"]["os"], "busybox")

    def test_broken_source(self):
        """A container whose metadata.yaml is not valid cannot be published."""
        with self.assertRaises(ImageFormatError):
            metadata.for_publish(b"architecture: vax\ncreation_date: 1\n", {}, "x86_64", 1)
