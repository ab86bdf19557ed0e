# -*- test-case-name: tests.integration.test_certificates -*-
"""`/1.0/certificates`: the trust store (`certificate_update`).

An untrusted client adds its own certificate with the trust password. Guessing
it is made slow and quiet: an address with too many wrong guesses is refused
for a while without a check (lxdtx.trust.PasswordAttempts); every check runs
scrypt, also when no password is set; and every answer to a password comes
PASSWORD_ANSWER_TIME after the request, right or wrong, so its timing tells
nothing. Wrong guesses are logged with the address, never the password.
"""

import base64
import binascii

from twisted.internet import task
from twisted.logger import Logger

from lxdtx import errors, tls
from lxdtx.bodies import STRING, fields, one_of_strings
from lxdtx.resources.common import string
from lxdtx.response import SyncResponse, created, empty, etag_of
from lxdtx.router import Action, Endpoint
from lxdtx.state import ABSENT, Delete, Put
from lxdtx.trust import KIND

log = Logger()

# Seconds from a password-carrying request to its answer (longer only when scrypt is).
PASSWORD_ANSWER_TIME = 0.5

def _render(fingerprint, value):
    return {
        "name": value.get("name", ""),
        "type": value.get("type", "client"),
        "certificate": value["certificate"],
        "fingerprint": fingerprint,
    }


def _find(store, prefix):
    """The document of a certificate by full fingerprint or unique prefix."""
    doc = store.get(KIND, prefix)
    if doc is not None:
        return doc
    matches = [name for name in store.names(KIND) if name.startswith(prefix)] if prefix else []
    if not matches:
        raise errors.NotFound()
    if len(matches) > 1:
        raise errors.BadRequest("More than one certificate matches")
    return store.get(KIND, matches[0])


def _check_type(value):
    if not isinstance(value, (str, type(None))):
        raise errors.BadRequest('Invalid value for "type": must be a string')
    if value not in (None, "", "client"):
        raise errors.BadRequest(f"Unknown request type {value}")


async def _check_password(req, password):
    """403 unless `password` is the trust password and the caller's address may try now."""
    daemon = req.daemon
    peer = req.remote_address
    attempts = daemon.password_attempts
    if not attempts.begin(peer):
        log.warn("Trust password attempt from {peer} refused: too many failed attempts", peer=peer)
        raise errors.Forbidden("too many failed attempts")
    reactor = daemon.reactor
    answer_at = reactor.seconds() + PASSWORD_ANSWER_TIME
    try:
        right = await daemon.config.check_password(password)
    except BaseException:
        attempts.abandoned(peer)
        raise
    if not right:
        attempts.failed(peer)
        log.warn("Wrong trust password from {peer}", peer=peer)
    else:
        attempts.succeeded(peer)
    wait = answer_at - reactor.seconds()
    if wait > 0:
        await task.deferLater(reactor, wait)
    if not right:
        raise errors.Forbidden()


async def list_certificates(req):
    store = req.daemon.store
    if req.recursion:
        return SyncResponse([_render(doc.name, doc.value) for doc in store.list(KIND)])
    return SyncResponse([f"/1.0/certificates/{name}" for name in store.names(KIND)])


async def add_certificate(req):
    daemon = req.daemon
    body = req.json()
    _check_type(body.get("type"))
    if not req.trusted:
        if daemon.trust.pki:
            raise errors.Forbidden("Adding certificates with the trust password is disabled in CA mode")
        await _check_password(req, body.get("password"))
    text = string(body, "certificate")
    name = string(body, "name")
    if text:
        try:
            der = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise errors.BadRequest("invalid certificate: not base64-encoded DER")
    else:
        if req.is_unix:
            raise errors.BadRequest("Can't use TLS data on non-TLS link")
        peer = daemon.trust.peer(req.http)
        if peer is None:
            raise errors.BadRequest("No client certificate provided")
        if not req.trusted and not daemon.trust.certificate_acceptable(peer):
            raise errors.Forbidden()
        der = peer.der
        name = req.remote_address
    try:
        from cryptography import x509

        x509.load_der_x509_certificate(der)
    except ValueError:
        # The parser's own text is a Rust debug dump of its state: not for the client.
        raise errors.BadRequest("invalid certificate: not a DER-encoded X.509 certificate")
    fingerprint = tls.fingerprint(der)
    if daemon.store.exists(KIND, fingerprint):
        raise errors.BadRequest("Certificate already in trust store")
    value = {"name": name, "type": "client", "certificate": tls.der_to_pem(der)}
    await daemon.store.commit([Put(KIND, fingerprint, value, expect=ABSENT)])
    daemon.events.lifecycle("certificate-created", f"/1.0/certificates/{fingerprint}")
    return created(f"/1.0/certificates/{fingerprint}")


async def get_certificate(req):
    doc = _find(req.daemon.store, req.params["fingerprint"])
    rendered = _render(doc.name, doc.value)
    return SyncResponse(rendered, etag=etag_of(rendered))


async def _update(req, replace):
    doc = _find(req.daemon.store, req.params["fingerprint"])
    req.check_etag(_render(doc.name, doc.value))
    body = req.json()
    value = dict(doc.value)
    if replace or "type" in body:
        _check_type(body.get("type"))
    if replace or "name" in body:
        value["name"] = string(body, "name")
    await req.daemon.store.commit([Put(KIND, doc.name, value, expect=doc.revision)])
    req.daemon.events.lifecycle("certificate-updated", f"/1.0/certificates/{doc.name}")
    return empty()


async def put_certificate(req):
    return await _update(req, replace=True)


async def patch_certificate(req):
    return await _update(req, replace=False)


async def delete_certificate(req):
    doc = _find(req.daemon.store, req.params["fingerprint"])
    await req.daemon.store.commit([Delete(KIND, doc.name, expect=doc.revision)])
    req.daemon.events.lifecycle("certificate-deleted", f"/1.0/certificates/{doc.name}")
    return empty()


CERTIFICATE = fields(type=one_of_strings("client"), name=STRING)

ENDPOINTS = [
    Endpoint(
        "/1.0/certificates",
        get=list_certificates,
        post=Action(add_certificate, untrusted=True, max_body=64 * 1024, untrusted_max_body=64 * 1024,
                    body=fields(type=one_of_strings("client"), certificate=STRING, name=STRING, password=STRING)),
    ),
    Endpoint(
        "/1.0/certificates/{fingerprint}",
        get=get_certificate, put=Action(put_certificate, body=CERTIFICATE),
        patch=Action(patch_certificate, body=CERTIFICATE), delete=delete_certificate,
    ),
]
