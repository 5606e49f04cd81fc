"""The hub's tables for updates flowing down: published bundle files by content, signed
bundles, bundle sets (current for all stations or a group), each station's group and what it reports
running, and the public keys publishing trusts. Kept apart from hub/models.py; made by migration 0003."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, deferred, mapped_column

from hub.models import Base


class BundleBlob(Base):
    """One file of a published bundle, by its sha256 (the same file in two bundles is stored once)."""

    __tablename__ = "bundle_blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PublishedBundle(Base):
    """A signed bundle: its signed file list (plus signature.json itself) and who signed it."""

    __tablename__ = "bundles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32))
    signature_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # identifies the bundle
    files_json: Mapped[str] = mapped_column(Text)  # [{path, sha256, size}] incl. signature.json
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BundleSet(Base):
    """The ensemble stations should run: current for `group_name` (NULL: every station) from
    `created_at` on; a station runs the newest set made for its group or for all."""

    __tablename__ = "bundle_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    group_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    bundle_ids_json: Mapped[str] = mapped_column(Text)  # ensemble order
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeviceFleet(Base):
    """A station's group and its last report of installed models / update state."""

    __tablename__ = "device_fleet"
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    group_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    installed_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    update_state: Mapped[str | None] = mapped_column(String(40), nullable=True)
    update_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TrustedKey(Base):
    """A public key `smearscope-hub models publish` accepts signatures from."""

    __tablename__ = "trusted_keys"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(100))  # base64 of the 32 raw bytes
    comment: Mapped[str] = mapped_column(String(200), default="")
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
