"""Bounds on untrusted callers: wrong trust passwords per address, untrusted connections."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lxdtx.trust import PasswordAttempts, UntrustedConnections


class PasswordAttemptsTests(SynchronousTestCase):
    """The per-address limiter of trust password guesses, on an injected clock."""

    def setUp(self):
        self.clock = Clock()
        self.attempts = PasswordAttempts(self.clock, max_failures=5, window=60, cooldown=60)

    def fail(self, peer, times=1):
        for _ in range(times):
            self.assertTrue(self.attempts.begin(peer))
            self.attempts.failed(peer)

    def test_blocked_after_failures(self):
        """Five wrong passwords within the window block the address; others are not affected."""
        self.fail("10.0.0.1", 4)
        self.assertFalse(self.attempts.blocked("10.0.0.1"))
        self.fail("10.0.0.1")
        self.assertTrue(self.attempts.blocked("10.0.0.1"))
        self.assertFalse(self.attempts.begin("10.0.0.1"))
        self.assertTrue(self.attempts.begin("10.0.0.2"))

    def test_cooldown_ends(self):
        """The block lasts `cooldown` seconds; then the address starts afresh."""
        self.fail("10.0.0.1", 5)
        self.clock.advance(59.9)
        self.assertTrue(self.attempts.blocked("10.0.0.1"))
        self.clock.advance(0.2)
        self.assertFalse(self.attempts.blocked("10.0.0.1"))
        self.fail("10.0.0.1", 4)
        self.assertFalse(self.attempts.blocked("10.0.0.1"))

    def test_window_slides(self):
        """Failures older than the window do not count."""
        self.fail("10.0.0.1", 4)
        self.clock.advance(61)
        self.fail("10.0.0.1", 4)
        self.assertFalse(self.attempts.blocked("10.0.0.1"))
        self.fail("10.0.0.1")
        self.assertTrue(self.attempts.blocked("10.0.0.1"))

    def test_success_resets(self):
        """A right password forgets the address's failures."""
        self.fail("10.0.0.1", 4)
        self.assertTrue(self.attempts.begin("10.0.0.1"))
        self.attempts.succeeded("10.0.0.1")
        self.fail("10.0.0.1", 4)
        self.assertFalse(self.attempts.blocked("10.0.0.1"))

    def test_parallel_checks_count(self):
        """Checks still running count against the address: a burst gets no more tries than a row of them."""
        for _ in range(5):
            self.assertTrue(self.attempts.begin("10.0.0.1"))
        self.assertFalse(self.attempts.begin("10.0.0.1"))
        self.attempts.abandoned("10.0.0.1")
        self.assertTrue(self.attempts.begin("10.0.0.1"))

    def test_memory_bounded(self):
        """At most `max_peers` addresses are remembered in each table; the newest is always kept."""
        attempts = PasswordAttempts(self.clock, max_failures=2, max_peers=10)
        for i in range(100):
            peer = f"10.0.{i}.1"
            attempts.begin(peer)
            attempts.failed(peer)
            attempts.begin(peer)
            attempts.failed(peer)
            self.clock.advance(0.1)
        self.assertLessEqual(len(attempts._blocked), 10)
        self.assertTrue(attempts.blocked("10.0.99.1"))
        for i in range(100):
            attempts.begin(f"10.1.{i}.1")
            attempts.failed(f"10.1.{i}.1")
        self.assertLessEqual(len(attempts._failures), 10)
        attempts.begin("10.1.99.1")
        attempts.failed("10.1.99.1")
        self.assertTrue(attempts.blocked("10.1.99.1"))


class UntrustedConnectionsTests(SynchronousTestCase):
    """The counts behind the untrusted-connection caps."""

    def setUp(self):
        self.limits = UntrustedConnections(total=3, per_peer=2, pending=2)

    def test_caps(self):
        """`per_peer` per address, `total` in all; releasing one makes room."""
        a, b, c, d = object(), object(), object(), object()
        self.assertTrue(self.limits.admit(a, "p"))
        self.assertTrue(self.limits.admit(b, "p"))
        self.assertFalse(self.limits.admit(c, "p"))
        self.assertTrue(self.limits.admit(c, "q"))
        self.assertFalse(self.limits.admit(d, "r"))
        self.assertEqual((self.limits.untrusted_count(), self.limits.untrusted_count("p")), (3, 2))
        self.limits.release(a)
        self.assertTrue(self.limits.admit(d, "p"))
        self.limits.release(a)  # twice is harmless
        self.assertEqual(self.limits.untrusted_count(), 3)

    def test_pending(self):
        """Pending connections are never refused; past the cap the oldest is handed back to drop."""
        a, b, c = object(), object(), object()
        self.assertEqual(self.limits.connecting(a), [])
        self.assertEqual(self.limits.connecting(b), [])
        self.assertEqual(self.limits.connecting(c), [a])
        self.limits.release(b)
        self.assertTrue(self.limits.admit(c, "p"))
        self.assertEqual((self.limits.pending_count(), self.limits.untrusted_count()), (0, 1))
