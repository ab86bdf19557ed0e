"""Seccomp policies from security.syscalls.* and raw.seccomp."""

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from lxdtx.config.schema import ConfigError
from lxdtx.instance import seccomp

DEFAULT = (
    "2\nblacklist\n"
    "reject_force_umount  # comment this to allow umount -f;  not recommended\n"
    "[all]\n"
    "kexec_load errno 38\nopen_by_handle_at errno 38\ninit_module errno 38\n"
    "finit_module errno 38\ndelete_module errno 38\n"
)


class ProfileTests(SynchronousTestCase):
    """profile() builds LXD's policies in liblxc's version 2 language."""

    def test_default(self):
        """With no key set the default deny list applies (blacklist_default is on by default)."""
        self.assertEqual(seccomp.profile({}, "x86_64"), DEFAULT)
        self.assertEqual(seccomp.profile({"security.syscalls.blacklist_default": ""}, "x86_64"), DEFAULT)
        self.assertEqual(seccomp.profile({"security.syscalls.blacklist_default": "true"}, "x86_64"), DEFAULT)

    def test_none(self):
        """Everything off: no policy at all."""
        config = {"security.syscalls.blacklist_default": "false"}
        self.assertIsNone(seccomp.profile(config, "x86_64"))
        self.assertFalse(seccomp.needs_policy(config))

    def test_user_blacklist(self):
        """The user's list follows the default one, one rule a line, in an [all] section."""
        policy = seccomp.profile({"security.syscalls.blacklist": " mkdir \n\nchmod errno 1\n"}, "x86_64")
        self.assertEqual(policy, DEFAULT + "[all]\nmkdir\nchmod errno 1\n")

    def test_user_blacklist_alone(self):
        """Without the default list only the user's rules remain."""
        policy = seccomp.profile({"security.syscalls.blacklist_default": "0",
                                  "security.syscalls.blacklist": "mkdir"}, "x86_64")
        self.assertEqual(policy, "2\nblacklist\n[all]\nmkdir\n")

    def test_compat(self):
        """The compat list sits in the architecture's section, each syscall with errno 38."""
        policy = seccomp.profile({"security.syscalls.blacklist_compat": "true"}, "x86_64")
        self.assertTrue(policy.startswith(DEFAULT + "[x86_64]\ncompat_sys_rt_sigaction errno 38\n"))
        self.assertTrue(policy.endswith("stub_x32_execveat errno 38\n"))
        self.assertEqual(policy.count(" errno 38\n"), 5 + len(seccomp.COMPAT_SYSCALLS))

    def test_compat_section_names(self):
        """liblxc calls aarch64 `arm64`."""
        for arch, section in [("aarch64", "arm64"), ("ppc64le", "ppc64le"), ("x86_64", "x86_64")]:
            policy = seccomp.profile({"security.syscalls.blacklist_compat": "yes"}, arch)
            self.assertIn(f"\n[{section}]\n", policy)

    def test_compat_unsupported(self):
        """Other architectures are refused with LXD's message."""
        with self.assertRaises(ConfigError) as raised:
            seccomp.profile({"security.syscalls.blacklist_compat": "true"}, "s390x")
        self.assertEqual(raised.exception.problems[0][0], "security.syscalls.blacklist_compat")
        self.assertIn("isn't supported on this architecture", str(raised.exception))

    def test_whitelist(self):
        """A whitelist is a policy of its own."""
        policy = seccomp.profile({"security.syscalls.whitelist": "read\nwrite\nexit_group\n",
                                  "security.syscalls.blacklist_default": "false"}, "x86_64")
        self.assertEqual(policy, "2\nwhitelist\n[all]\nread\nwrite\nexit_group\n")

    def test_raw(self):
        """raw.seccomp is used verbatim (with a final newline)."""
        raw = "2\nblacklist\n[all]\nmount errno 1"
        self.assertEqual(seccomp.profile({"raw.seccomp": raw}, "x86_64"), raw + "\n")
        self.assertEqual(seccomp.profile({"raw.seccomp": raw + "\n", "security.syscalls.blacklist_default": "false"},
                                         "x86_64"), raw + "\n")


class LiblxcParsesTests(SynchronousTestCase):
    """liblxc accepts the generated policies as a config's lxc.seccomp.profile."""

    def test_loads(self):
        """The path loads (the policy itself is parsed at start: see the integration test)."""
        import lxc

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "policy")
            with open(path, "w") as f:
                f.write(seccomp.profile({"security.syscalls.blacklist": "mkdir"}, "x86_64"))
            container = lxc.Container("seccomp", config_path=d)
            self.assertTrue(container.set_config_item("lxc.seccomp.profile", path))
            self.assertEqual(container.get_config_item("lxc.seccomp.profile"), path)
