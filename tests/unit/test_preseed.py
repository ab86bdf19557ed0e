"""The preseed checks: LXD's schema, values as LXD writes them, errors naming the field."""

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.preseed import PreseedError, parse


class PreseedCheckTests(SynchronousTestCase):
    """What `lxdtx init --preseed` accepts before it sends anything."""

    def test_lxd_preseed(self):
        """An `lxd init --dump`-style document comes out normalised: strings, defaults filled in."""
        preseed = parse("""
config:
  core.https_address: '[::]:8443'
  images.auto_update_interval: 15
  core.proxy_ignore_hosts: ~
networks:
- name: lxdbr0
  config: {ipv4.address: auto, ipv4.nat: true}
  project: default
storage_pools:
- {name: default, driver: dir}
profiles:
- name: default
  devices:
    root: {path: /, pool: default, type: disk}
""")
        self.assertEqual(preseed["config"], {"core.https_address": "[::]:8443", "images.auto_update_interval": "15",
                                             "core.proxy_ignore_hosts": ""})
        self.assertEqual(preseed["networks"], [{"name": "lxdbr0", "description": "", "type": "bridge",
                                                "config": {"ipv4.address": "auto", "ipv4.nat": "true"}}])
        self.assertEqual(preseed["storage_pools"][0]["driver"], "dir")
        self.assertEqual(preseed["profiles"][0]["devices"]["root"]["type"], "disk")

    def test_empty(self):
        """An empty document is a preseed that changes nothing."""
        self.assertEqual(parse(""), {"config": {}, "networks": [], "storage_pools": [], "profiles": []})

    def test_errors_name_the_field(self):
        """Each refusal names where in the document the problem is."""
        cases = {
            "- a\n": "the document must be a map",
            "storage_pools:\n- name: p\n  driver: dir\n  config: {size: [1]}\n":
                'Invalid value for "storage_pools[0].config.size"',
            "profiles:\n- name: p\n  devices: [1]\n": 'Invalid value for "profiles[0].devices"',
            "networks:\n- type: bridge\n": 'Missing "networks[0].name"',
            "networks:\n- name: n\n  project: other\n": '"networks[0].project"',
            "profiles:\n- name: 5\n": 'Invalid value for "profiles[0].name"',
        }
        for text, message in cases.items():
            with self.assertRaises(PreseedError) as caught:
                parse(text)
            self.assertIn(message, str(caught.exception), text)
