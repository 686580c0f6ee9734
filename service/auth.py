"""API keys and tenants.

A key is a random secret shown once; the store keeps only its SHA-256 (keys are high-entropy,
so a fast hash is enough) mapped to a tenant. With no key configured, the embedded default
serves one local tenant without keys, and only to loopback clients on a loopback bind."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import NamedTuple

from starlette.requests import HTTPConnection

from service.errors import Unauthorized
from service.settings import ServiceSettings, is_loopback
from service.storage import JobStore

KEYS = "apikeys"
LOCAL_TENANT = "local"
SESSION_COOKIE = "c3_key"
"""The dashboard's login stores the key in this (HttpOnly) cookie; the API accepts it too."""
_PREFIX = "c3k_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: JobStore, tenant: str) -> str:
    """Make a key for `tenant`; returns the secret (it cannot be recovered later)."""
    if not tenant or not tenant.replace("-", "").replace("_", "").isalnum():
        raise ValueError("tenant must be letters, digits, '-' or '_'")
    key = _PREFIX + secrets.token_urlsafe(32)
    store.put_key(KEYS, hash_key(key), json.dumps({"tenant": tenant, "created_at": time.time()}))
    return key


class KeyInfo(NamedTuple):
    id: str  # the start of the key's hash: names a key without showing it
    tenant: str
    created_at: float


KEY_ID_LENGTH = 12


def key_infos(store: JobStore) -> list[KeyInfo]:
    """Every key, oldest first."""
    infos = []
    for digest, raw in store.list_keys(KEYS):
        value = json.loads(raw)
        infos.append(KeyInfo(digest[:KEY_ID_LENGTH], value["tenant"], value["created_at"]))
    return sorted(infos, key=lambda info: info.created_at)


def revoke_key(store: JobStore, key: str) -> KeyInfo | None:
    """Revoke a key given as its secret or as its id (`key_infos`); the revoked key, or None
    when no key (or more than one) matches."""
    if key.startswith(_PREFIX):
        digests = [hash_key(key)]
    elif len(key) >= 8:
        digests = [d for d, _ in store.list_keys(KEYS) if d.startswith(key.lower())]
    else:
        return None
    if len(digests) != 1 or (raw := store.get_key(KEYS, digests[0])) is None:
        return None
    store.delete_key(KEYS, digests[0])
    value = json.loads(raw)
    return KeyInfo(digests[0][:KEY_ID_LENGTH], value["tenant"], value["created_at"])


def tenant_for_key(store: JobStore, key: str) -> str | None:
    raw = store.get_key(KEYS, hash_key(key))
    return json.loads(raw)["tenant"] if raw else None


def open_access(settings: ServiceSettings, store: JobStore) -> bool:
    """Keyless access: embedded default, loopback bind, no key configured."""
    return settings.embedded and settings.loopback and store.count_keys(KEYS) == 0


def refuse_unsafe_bind(settings: ServiceSettings, store: JobStore) -> str | None:
    """Why the API must not start (None when it may): a non-loopback bind with no keys."""
    if settings.loopback or not settings.embedded or store.count_keys(KEYS) > 0:
        return None
    return (
        f"refusing to listen on {settings.host} without API keys: anyone who can reach it "
        "could use it. Create a key first (c3 keys create --tenant NAME) or bind to 127.0.0.1."
    )


def client_is_local(host: str | None) -> bool:
    return host is not None and is_loopback(host)


def presented_key(connection: HTTPConnection) -> str | None:
    """The API key from `Authorization: Bearer …`, or from the dashboard's session cookie."""
    header = connection.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    return connection.cookies.get(SESSION_COOKIE) or None


def authenticate(connection: HTTPConnection, settings: ServiceSettings, store: JobStore) -> str:
    """The tenant a request acts for; `Unauthorized` without a valid key (unless keyless
    loopback access is open). Needs only the headers: the request gate calls it before the
    body is read."""
    key = presented_key(connection)
    if key is not None:
        tenant = tenant_for_key(store, key)
        if tenant is None:
            raise Unauthorized(
                "unknown API key", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return tenant
    client = connection.client.host if connection.client else None
    if open_access(settings, store) and client_is_local(client):
        return LOCAL_TENANT
    raise Unauthorized(
        "an API key is required: send 'Authorization: Bearer <key>' "
        "(make one with: c3 keys create --tenant NAME)",
        headers={"WWW-Authenticate": "Bearer"},
    )
