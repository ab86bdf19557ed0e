"""Background image upkeep on a task.Clock: auto-update rounds, cached image expiry, the keys."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import timeutil
from lxdtx.image import upkeep

NOW = 1_800_000_000


class _Config:
    def __init__(self, **values):
        self.values = {k.replace("_", ".", 1): v for k, v in values.items()}
        self.listeners = []

    def get(self, key):
        return self.values.get(key)

    def on_change(self, callback):
        self.listeners.append(callback)

    def set(self, key, value):
        self.values[key] = value
        for callback in self.listeners:
            callback([key])


class _Images:
    """Records refresh and delete calls; `refresh` answers from `newer`."""

    def __init__(self, images):
        self.images = images
        self.calls = []
        self.newer = set()
        self.failing = set()

    def list(self):
        return list(self.images)

    async def refresh(self, fingerprint, operation=None):
        self.calls.append(("refresh", fingerprint))
        if fingerprint in self.failing:
            raise RuntimeError("server gone")
        return fingerprint in self.newer

    async def delete(self, fingerprint):
        self.calls.append(("delete", fingerprint))
        self.images = [i for i in self.images if i["fingerprint"] != fingerprint]


class _Daemon:
    def __init__(self, images, **config):
        self.images = _Images(images)
        self.config = _Config(**config)


def _image(fp, *, cached=False, auto_update=False, source=True, last_used=None, uploaded=NOW - 10):
    return {"fingerprint": fp, "cached": cached, "auto_update": auto_update,
            "update_source": {"server": "https://x", "protocol": "simplestreams", "alias": "a"} if source else None,
            "last_used_at": timeutil.from_timestamp(last_used) if last_used else timeutil.ZERO_TIME,
            "uploaded_at": timeutil.from_timestamp(uploaded)}


class UpkeepTests(SynchronousTestCase):
    """The rounds run when the keys say, on the images they name."""

    def make(self, images, **config):
        clock = task.Clock()
        clock.advance(NOW)
        daemon = _Daemon(images, **config)
        service = upkeep.ImageUpkeep(daemon.images, daemon.config, clock)
        service.startService()
        self.addCleanup(service.stopService)
        return clock, daemon, service

    def test_auto_update_every_interval(self):
        """Nothing at start; after `images.auto_update_interval` hours each auto-update image with
        a source is refreshed (one failing does not stop the others), and again an interval later."""
        images = [_image("a", auto_update=True), _image("b"), _image("c", auto_update=True, source=False),
                  _image("d", auto_update=True)]
        clock, daemon, _ = self.make(images, images_auto_update_interval="2", images_remote_cache_expiry="10")
        daemon.images.failing.add("a")
        clock.advance(2 * 3600 - 1)
        self.assertEqual([c for c in daemon.images.calls if c[0] == "refresh"], [])
        clock.advance(1)
        self.assertEqual([c for c in daemon.images.calls if c[0] == "refresh"], [("refresh", "a"), ("refresh", "d")])
        clock.advance(2 * 3600)
        self.assertEqual(len([c for c in daemon.images.calls if c[0] == "refresh"]), 4)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_interval_zero_disables_and_change_reschedules(self):
        """0 hours: no round; setting the key schedules rounds from then on."""
        clock, daemon, _ = self.make([_image("a", auto_update=True)], images_auto_update_interval="0")
        clock.advance(48 * 3600)
        self.assertEqual(daemon.images.calls, [])
        daemon.config.set("images.auto_update_interval", "1")
        clock.advance(3600)
        self.assertEqual(daemon.images.calls, [("refresh", "a")])

    def test_cached_images_expire(self):
        """At start and every hour, cached images unused for `images.remote_cache_expiry` days
        go (last use, else upload time); others stay."""
        images = [
            _image("old-cached", cached=True, last_used=NOW - 11 * upkeep.DAY),
            _image("fresh-cached", cached=True, last_used=NOW - 9 * upkeep.DAY),
            _image("never-used", cached=True, uploaded=NOW - 10 * upkeep.DAY - 5),
            _image("old-imported", last_used=NOW - 100 * upkeep.DAY),
        ]
        clock, daemon, _ = self.make(images, images_remote_cache_expiry="10", images_auto_update_interval="0")
        clock.advance(0)
        self.assertEqual(daemon.images.calls, [("delete", "old-cached"), ("delete", "never-used")])
        clock.advance(upkeep.DAY)
        self.assertEqual(daemon.images.calls[-1], ("delete", "fresh-cached"))
        self.assertEqual([i["fingerprint"] for i in daemon.images.images], ["old-imported"])

    def test_expiry_change_prunes_at_once(self):
        """Lowering `images.remote_cache_expiry` removes what is now past it without waiting."""
        clock, daemon, _ = self.make([_image("c", cached=True, last_used=NOW - 60)],
                                     images_remote_cache_expiry="10", images_auto_update_interval="0")
        clock.advance(0)
        self.assertEqual(daemon.images.calls, [])
        daemon.config.set("images.remote_cache_expiry", "0")
        self.assertEqual(daemon.images.calls, [("delete", "c")])

    def test_rounds_do_not_overlap(self):
        """A round still running is not started twice."""
        _, _, service = self.make([], images_auto_update_interval="0")
        gate = defer.Deferred()
        started = []

        async def slow():
            started.append(1)
            await gate

        first = service._round("prune", slow)
        second = service._round("prune", slow)
        self.assertIs(first, second)
        self.assertEqual(started, [1])
        gate.callback(None)
        self.successResultOf(first)

    def test_expired_needs_cached(self):
        """`expired` is False for an image that was not fetched for a container."""
        self.assertFalse(upkeep.expired(_image("x", last_used=1), NOW, 1))
        self.assertTrue(upkeep.expired(_image("x", cached=True, last_used=1), NOW, 1))
