"""The hub's tables (SQLAlchemy 2 declarative). The schema itself is made by Alembic (hub/migrations)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column


class Base(DeclarativeBase):
    pass


class Device(Base):
    """A registered device; it authenticates with its own token (stored as sha256 only)."""

    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_address: Mapped[str | None] = mapped_column(String(100), nullable=True)
    clock_skew_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # device - hub, last batch
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class User(Base):
    """A person who reads the hub (dashboard, read API); token stored as sha256 only."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)  # may export training data


class Image(Base):
    """JPEG bytes by their sha256. Kept in the database so every hub instance sees the same images."""

    __tablename__ = "images"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), nullable=True)  # first uploader
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ImageDevice(Base):
    """Which devices uploaded an image's bytes. A device's view of images (`HEAD`, `/images/have`, the
    images its records may name) is only these rows, so it learns nothing about other devices' images."""

    __tablename__ = "image_devices"
    sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Result(Base):
    """One result record (Contract 3), keyed by the UUID the device made; append-only."""

    __tablename__ = "results"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))  # the authenticated device
    seq: Mapped[int] = mapped_column(Integer)  # the device's monotonic sequence
    sample_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    captured_at: Mapped[str] = mapped_column(String(40))  # device clock, as sent
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # hub clock
    clock_skew_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    skew_flag: Mapped[bool] = mapped_column(Boolean, default=False)  # the time below is set
    time_flag: Mapped[str | None] = mapped_column(String(200), nullable=True)  # why the time is doubtful
    source: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))
    review_of: Mapped[str | None] = mapped_column(String(36), nullable=True)
    label: Mapped[str] = mapped_column(String(100))
    confidence: Mapped[float] = mapped_column(Float)
    abstained: Mapped[bool] = mapped_column(Boolean)
    image_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    um_per_px: Mapped[float | None] = mapped_column(Float, nullable=True)  # scale it was classified at
    profile: Mapped[str | None] = mapped_column(String(200), nullable=True)  # station's calibration profile
    record_json: Mapped[str] = mapped_column(Text)  # the record exactly as the device sent it

    __table_args__ = (
        Index("results_device_seq", "device_id", "seq"),
        Index("results_sample", "sample_id"),
        Index("results_review_of", "review_of"),
        Index("results_received", "received_at"),
    )


class Cell(Base):
    """One counted cell of a record (common/cell_fields.py: the station's `CellRecord.to_dict`). The
    detector's and classifier's part never changes; the review columns follow the station's latest
    cell review (a record re-sent after a cell review updates them: hub/cells/store.py)."""

    __tablename__ = "cells"
    result_id: Mapped[str] = mapped_column(ForeignKey("results.id"), primary_key=True)
    cell_index: Mapped[int] = mapped_column(Integer, primary_key=True)  # the cell's `index` in its frame
    x0: Mapped[int] = mapped_column(Integer)  # box in the stored frame's pixels (x1, y1 exclusive)
    y0: Mapped[int] = mapped_column(Integer)
    x1: Mapped[int] = mapped_column(Integer)
    y1: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)  # centre, frame pixels
    y: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(20))  # detector: white | platelet | other
    state: Mapped[str] = mapped_column(String(20))  # classifier: blast | not_blast | unclassified
    label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    p_blast: Mapped[float] = mapped_column(Float)
    probabilities_json: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewed_label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reviewer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_at: Mapped[str | None] = mapped_column(String(40), nullable=True)  # device clock, UTC ISO

    __table_args__ = (Index("cells_reviewed", "reviewed_label"),)


class Sample(Base):
    """A slide as the device describes it (slide id typed by the technician, open/finished and, once
    finished, the device's frozen slide-level summary). Upserted; finished never goes back to open."""

    __tablename__ = "samples"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    slide_id: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[str] = mapped_column(String(40))  # device clock
    finished_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    summary_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserSession(Base):
    """A dashboard login. The cookie carries a random id; only its sha256 is stored. Logging out, a new
    token or revoking the user deletes the rows, so an old cookie stops working at once."""

    __tablename__ = "user_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Setting(Base):
    """Hub-wide values every instance shares (e.g. the session signing key)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
