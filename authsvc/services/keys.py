"""Signing-key rotation through the admin API: a new key file, every worker told, and the
audit trail."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.errors import Conflict
from authsvc.security.keys import KeyRing, SigningKey
from authsvc.security.keystore import KeyStore
from authsvc.services.audit import AuditService


class KeyService:
    def __init__(
        self,
        db: AsyncSession,
        actor: Principal,
        client_ip: str | None,
        *,
        ring: KeyRing,
        store: KeyStore | None,
    ) -> None:
        self.db = db
        self.ring = ring
        self.store = store
        self.audit = AuditService(db, actor, client_ip)

    async def rotate(self) -> SigningKey:
        """A key published at once that signs after the activation delay; 409
        ``KEYS_NOT_ROTATABLE`` when one key file is configured (nothing to rotate into)."""
        if self.store is None:
            raise Conflict(
                "A single key file is configured; rotate by replacing it.",
                code="KEYS_NOT_ROTATABLE",
            )
        # The file comes first: its name is the key's id. A database failure after it leaves a
        # rotated key without its audit event (a file write cannot join the transaction).
        key = self.store.rotate()
        self.ring.reload()  # this worker at once; the others on their next reload
        self.audit.record("key.rotate", "key", key.kid, None, {"activates_at": key.activates_at})
        await self.db.commit()
        return key
