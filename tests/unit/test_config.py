"""Value validators, the Schema machinery and the container (and profile) key schema."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import errors
from lxdtx.config import container
from lxdtx.config.schema import ConfigError, Key, Schema
from lxdtx.config.types import (
    is_cidr, is_host_port, is_mac, is_octal_mode, is_percent_or_size, is_priority, is_uint32,
    one_of, parse_bit_rate, parse_bool, parse_host_port, parse_int64, parse_size,
)

BINARY = {"": 1, "B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40,
          "PB": 1 << 50, "EB": 1 << 60}


class SizeTests(SynchronousTestCase):
    """Size strings are bytes with binary kB..EB suffixes; IEC and `KB` suffixes are refused."""

    @given(st.integers(min_value=0, max_value=10**12), st.sampled_from(sorted(BINARY)))
    def test_binary_suffixes(self, number, suffix):
        """Every accepted suffix multiplies by a power of 1024."""
        self.assertEqual(parse_size(f"{number}{suffix}"), number * BINARY[suffix])

    def test_examples(self):
        """The values the reference documents."""
        self.assertEqual(parse_size("1GB"), 1024**3)
        self.assertEqual(parse_size("512MB"), 512 * 1024**2)
        self.assertEqual(parse_size("4096"), 4096)
        self.assertEqual(parse_size("10B"), 10)

    @given(st.integers(min_value=0, max_value=10**6),
           st.sampled_from(["KiB", "MiB", "GiB", "TiB", "KB", "kb", "mb", "G", "M", "k", "bytes"]))
    def test_other_suffixes_refused(self, number, suffix):
        """IEC suffixes, `KB` and other spellings are an `Unsupported suffix`."""
        with self.assertRaises(ValueError) as raised:
            parse_size(f"{number}{suffix}")
        self.assertIn(f"Unsupported suffix: {suffix}", str(raised.exception))

    @given(st.text().filter(lambda s: not s.strip().isdigit()))
    def test_garbage_never_crashes(self, text):
        """Any string either parses to a non-negative integer or raises ValueError."""
        try:
            value = parse_size(text)
        except ValueError:
            return
        self.assertIsInstance(value, int)
        self.assertGreaterEqual(value, 0)

    def test_negative_and_fractional_refused(self):
        """Sizes are whole, non-negative numbers."""
        for text in ("-1", "-1GB", "1.5GB", "", "GB"):
            self.assertRaises(ValueError, parse_size, text)

    def test_percent_or_size(self):
        """`limits.memory` takes a percentage or a size."""
        is_percent_or_size("50%")
        is_percent_or_size("512MB")
        self.assertRaises(ValueError, is_percent_or_size, "abc%")
        self.assertRaises(ValueError, is_percent_or_size, "512MiB")


class ScalarTests(SynchronousTestCase):
    """Booleans, integers, rates, addresses and modes."""

    def test_bool_spellings(self):
        """true/false/yes/no/1/0/on/off in any case."""
        for text in ("true", "TRUE", "yes", "1", "on", "On"):
            self.assertIs(parse_bool(text), True)
        for text in ("false", "No", "0", "off"):
            self.assertIs(parse_bool(text), False)
        self.assertRaises(ValueError, parse_bool, "maybe")
        self.assertRaises(ValueError, parse_bool, "")

    @given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
    def test_int64_range(self, number):
        """Every signed 64-bit number parses back to itself."""
        self.assertEqual(parse_int64(str(number)), number)

    def test_int64_bounds(self):
        """Numbers outside int64 and non-numbers are refused."""
        self.assertRaises(ValueError, parse_int64, str(1 << 63))
        self.assertRaises(ValueError, parse_int64, str(-(1 << 63) - 1))
        self.assertRaises(ValueError, parse_int64, "1e3")
        self.assertRaises(ValueError, parse_int64, "0x10")

    def test_uint32_and_priority(self):
        """uint32 refuses negatives; priorities are 0..10."""
        is_uint32("0")
        is_uint32(str((1 << 32) - 1))
        self.assertRaises(ValueError, is_uint32, "-1")
        self.assertRaises(ValueError, is_uint32, str(1 << 32))
        is_priority("10")
        self.assertRaises(ValueError, is_priority, "11")

    def test_bit_rates(self):
        """NIC limits need a bit-rate suffix; decimal multiples."""
        self.assertEqual(parse_bit_rate("100Mbit"), 100 * 10**6)
        self.assertEqual(parse_bit_rate("1kbit"), 1000)
        self.assertRaises(ValueError, parse_bit_rate, "100")
        self.assertRaises(ValueError, parse_bit_rate, "100MB")

    def test_host_port(self):
        """`host[:port]`, bracketed IPv6, default port 8443."""
        self.assertEqual(parse_host_port("127.0.0.1:9443", 8443), ("127.0.0.1", 9443))
        self.assertEqual(parse_host_port("127.0.0.1", 8443), ("127.0.0.1", 8443))
        self.assertEqual(parse_host_port("[::]:8443", 1), ("::", 8443))
        self.assertEqual(parse_host_port("[::1]", 8443), ("::1", 8443))
        self.assertEqual(parse_host_port("::", 8443), ("::", 8443))
        for bad in ("127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", ":8443", ""):
            self.assertRaises(ValueError, is_host_port, bad)

    @given(st.integers(min_value=1, max_value=65535))
    def test_any_port(self, port):
        """Every valid port number is accepted."""
        self.assertEqual(parse_host_port(f"10.0.0.1:{port}", 8443), ("10.0.0.1", port))

    def test_mac_cidr_mode_one_of(self):
        """The small validators accept their syntax and name the bad value."""
        is_mac("00:16:3e:aa:bb:cc")
        self.assertRaises(ValueError, is_mac, "00:16:3e:aa:bb")
        is_cidr("10.0.0.1/24")
        self.assertRaises(ValueError, is_cidr, "10.0.0.1")
        is_octal_mode("0644")
        self.assertRaises(ValueError, is_octal_mode, "0999")
        check = one_of("soft", "hard")
        check("soft")
        with self.assertRaises(ValueError) as raised:
            check("medium")
        self.assertIn("medium", str(raised.exception))


class SchemaTests(SynchronousTestCase):
    """Keys by name and pattern; problems name the key; the first error plus a count."""

    def setUp(self):
        self.schema = Schema(
            {"a.bool": Key(parse_bool, "false"), "a.any": Key()},
            [(r"user\..+", Key())],
            unknown="Unknown configuration key: {key}",
        )

    def test_lookup(self):
        """Exact keys first, then patterns; unknown is None."""
        self.assertIsNotNone(self.schema.lookup("a.bool"))
        self.assertIsNotNone(self.schema.lookup("user.anything.at.all"))
        self.assertIsNone(self.schema.lookup("user."))
        self.assertIsNone(self.schema.lookup("b"))

    def test_empty_value_is_unset(self):
        """The empty string passes every validator."""
        self.schema.validate({"a.bool": ""})

    def test_problems_name_keys(self):
        """Unknown keys and bad values each yield (key, message naming the key)."""
        problems = self.schema.problems({"zzz": "1", "a.bool": "maybe", "a.any": 3})
        self.assertEqual([key for key, _ in problems], ["a.any", "a.bool", "zzz"])
        for key, message in problems:
            self.assertIn(key, message)

    def test_more_errors_count(self):
        """ConfigError shows the first problem and how many more there are."""
        with self.assertRaises(ConfigError) as raised:
            self.schema.validate({"x": "1", "y": "2", "z": "3"})
        self.assertEqual(str(raised.exception), "Unknown configuration key: x (and 2 more errors)")

    def test_config_error_is_bad_request(self):
        """A ConfigError answers 400 without being logged as a crash."""
        error = ConfigError([("k", "bad k")])
        self.assertIsInstance(error, errors.BadRequest)
        self.assertEqual(error.code, 400)
        self.assertEqual(error.message, "bad k")

    def test_get_default(self):
        """`get` falls back to the key's default."""
        self.assertEqual(self.schema.get({}, "a.bool"), "false")
        self.assertEqual(self.schema.get({"a.bool": "true"}, "a.bool"), "true")
        self.assertEqual(self.schema.get({}, "nope"), "")


class ContainerKeyTests(SynchronousTestCase):
    """The container key schema, its patterns and cross-key rules."""

    def test_known_keys(self):
        """A representative valid config passes."""
        container.validate({
            "limits.cpu": "0-3", "limits.cpu.allowance": "50%", "limits.memory": "512MB",
            "limits.memory.enforce": "soft", "security.nesting": "true", "boot.autostart": "yes",
            "limits.kernel.nofile": "1024:unlimited", "user.foo": "bar", "environment.HOME": "/root",
            "raw.lxc": "lxc.aa_profile = unconfined\n# comment\n",
            "volatile.eth0.hwaddr": "00:16:3e:00:00:01", "volatile.last_state.power": "RUNNING",
            "raw.idmap": "both 1000 1000\nuid 50-60 500-510",
        })

    def test_unknown_key(self):
        """Unknown keys are named."""
        with self.assertRaises(ConfigError) as raised:
            container.validate({"limits.cpus": "1"})
        self.assertEqual(str(raised.exception), "Unknown configuration key: limits.cpus")

    def test_unknown_volatile_suffix(self):
        """Only the documented volatile.<dev>.* suffixes are keys."""
        self.assertRaises(ConfigError, container.validate, {"volatile.eth0.mtu": "1500"})
        self.assertRaises(ConfigError, container.validate, {"volatile.foo": "x"})

    def test_bad_values(self):
        """Bad values name the key and the reason."""
        cases = {
            "limits.cpu": "0", "limits.cpu.allowance": "50", "limits.memory": "1GiB",
            "limits.cpu.priority": "11", "security.privileged": "perhaps",
            "limits.kernel.nofile": "1:2:3", "raw.lxc": "lxc.logfile = /tmp/x",
            "raw.idmap": "all 1 2", "limits.memory.enforce": "medium",
        }
        for key, value in cases.items():
            with self.assertRaises(ConfigError, msg=key) as raised:
                container.validate({key: value})
            self.assertIn(key, str(raised.exception))

    def test_non_string_value(self):
        """Values must be JSON strings."""
        with self.assertRaises(ConfigError) as raised:
            container.validate({"security.nesting": True})
        self.assertIn("security.nesting", str(raised.exception))

    def test_profile_restrictions(self):
        """Profiles may not hold volatile or image keys."""
        with self.assertRaises(ConfigError) as raised:
            container.validate({"volatile.base_image": "abc"}, profile=True)
        self.assertEqual(str(raised.exception), "Volatile keys can only be set on containers.")
        with self.assertRaises(ConfigError) as raised:
            container.validate({"image.os": "busybox"}, profile=True)
        self.assertEqual(str(raised.exception), "Image keys can only be set on containers.")
        container.validate({"image.os": "busybox"})

    def test_seccomp_exclusive(self):
        """raw.seccomp and the syscall lists exclude each other."""
        with self.assertRaises(ConfigError) as raised:
            container.validate({"raw.seccomp": "x", "security.syscalls.whitelist": "read"})
        self.assertIn("mutually exclusive", str(raised.exception))
        with self.assertRaises(ConfigError) as raised:
            container.validate({"security.syscalls.whitelist": "read",
                                "security.syscalls.blacklist": "write"})
        self.assertIn("security.syscalls.whitelist", str(raised.exception))

    @given(st.from_regex(r"user\.[a-z][a-z0-9._-]{0,20}", fullmatch=True), st.text(max_size=30))
    def test_user_keys_free(self, key, value):
        """Every `user.*` key takes any string."""
        container.validate({key: value})

    def test_changed_not_live(self):
        """Keys that need a restart are reported; live keys and volatile ones are not."""
        old = {"security.privileged": "false", "limits.memory": "1GB", "volatile.x.name": "a"}
        new = {"security.privileged": "true", "limits.memory": "2GB", "volatile.x.name": "b"}
        self.assertEqual(container.changed_not_live(old, new), ["security.privileged"])
