# -*- test-case-name: tests.unit.test_image_upkeep -*-
"""Background image upkeep: auto-update and the expiry of cached images.

* Every `images.auto_update_interval` hours (0: never) each image with
  `auto_update` and an `update_source` is refreshed (`ImageStore.refresh`: a newer
  image at the source replaces it, aliases and all). The first round comes one
  interval after start-up, as in LXD; a change of the key schedules anew.
* Every hour, and at once when `images.remote_cache_expiry` changes, cached images
  (fetched for a container creation) unused for that many days are deleted;
  their last use is `last_used_at`, or `uploaded_at` when no container used them
  yet. 0 days keeps an unused cached image no longer than the next round.

Rounds never overlap, and one image failing is logged without stopping the rest.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from lxdtx import errors, timeutil

PRUNE_INTERVAL = 3600
DAY = 86400


def _int(value, default):
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


def expired(image, now, expiry_days):
    """Whether a cached image object is past `images.remote_cache_expiry` at `now` (unix seconds)."""
    if not image.get("cached"):
        return False
    last = image.get("last_used_at") or timeutil.ZERO_TIME
    if last == timeutil.ZERO_TIME:
        last = image.get("uploaded_at") or timeutil.ZERO_TIME
    try:
        last_seconds = timeutil.parse(last).timestamp()
    except (TypeError, ValueError):
        return False
    return now - last_seconds >= expiry_days * DAY


class ImageUpkeep(service.Service):
    """Runs the rounds of the module docstring for `images` (an ImageStore) on `clock`, as
    the server `config` says."""

    log = Logger()

    def __init__(self, images, config, clock):
        self.images = images
        self.config = config
        self.clock = clock
        self._update_call = None
        self._prune_call = None
        self._running = {}  # round name -> Deferred of the round in progress

    # -- schedule --------------------------------------------------------------

    def startService(self):
        super().startService()
        self.config.on_change(self._config_changed)
        self._schedule_update()
        self._prune_call = self.clock.callLater(0, self._prune_round)

    def stopService(self):
        super().stopService()
        for call in (self._update_call, self._prune_call):
            if call is not None and call.active():
                call.cancel()
        self._update_call = self._prune_call = None
        return defer.DeferredList(list(self._running.values()))

    def update_interval(self):
        """Seconds between auto-update rounds (0: none)."""
        return _int(self.config.get("images.auto_update_interval"), 6) * 3600

    def _schedule_update(self):
        if self._update_call is not None and self._update_call.active():
            self._update_call.cancel()
        self._update_call = None
        interval = self.update_interval()
        if interval and self.running:
            self._update_call = self.clock.callLater(interval, self._update_round)

    def _config_changed(self, keys):
        if not self.running:
            return
        if "images.auto_update_interval" in keys:
            self._schedule_update()
        if "images.remote_cache_expiry" in keys:
            self._round("prune", self.prune)

    def _update_round(self):
        self._update_call = None
        self._round("update", self.update_all).addBoth(lambda _: self._schedule_update())

    def _prune_round(self):
        self._prune_call = None

        def again(_):
            if self.running:
                self._prune_call = self.clock.callLater(PRUNE_INTERVAL, self._prune_round)

        self._round("prune", self.prune).addBoth(again)

    def _round(self, name, work):
        """Start `work()` unless a round of the same name is still going; a Deferred of the round."""
        if name in self._running:
            return self._running[name]
        d = defer.Deferred.fromCoroutine(work())
        d.addErrback(lambda f: self.log.failure("Image {name} round failed", f, name=name))
        self._running[name] = d
        d.addBoth(lambda result: (self._running.pop(name, None), result)[1])
        return d

    # -- rounds ----------------------------------------------------------------

    async def update_all(self):
        """Refresh every auto-update image that has a source; the fingerprints that were replaced."""
        images = self.images
        replaced = []
        for image in images.list():
            if not (image.get("auto_update") and image.get("update_source")):
                continue
            try:
                if await images.refresh(image["fingerprint"]):
                    replaced.append(image["fingerprint"])
            except errors.NotFound:
                continue  # deleted meanwhile
            except Exception as e:
                self.log.warn("Auto-update of image {fingerprint} failed: {error}",
                              fingerprint=image["fingerprint"], error=errors.describe(e))
        return replaced

    async def prune(self):
        """Delete the cached images past `images.remote_cache_expiry`; their fingerprints."""
        images = self.images
        days = _int(self.config.get("images.remote_cache_expiry"), 10)
        now = self.clock.seconds()
        gone = []
        for image in images.list():
            if not expired(image, now, days):
                continue
            try:
                await images.delete(image["fingerprint"])
            except errors.NotFound:
                continue
            except Exception as e:
                self.log.warn("Removing expired image {fingerprint} failed: {error}",
                              fingerprint=image["fingerprint"], error=errors.describe(e))
                continue
            self.log.info("Expired cached image {fingerprint} removed", fingerprint=image["fingerprint"])
            gone.append(image["fingerprint"])
        return gone
