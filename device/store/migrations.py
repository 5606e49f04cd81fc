"""Versioned schema migrations, applied in order; `PRAGMA user_version` holds the applied count.

Append a new migration to MIGRATIONS (never edit a shipped one): devices in the field upgrade by
running the ones they have not applied yet, each in its own transaction.
"""

from __future__ import annotations

M001_CORE = """
CREATE TABLE samples (
    id            TEXT PRIMARY KEY,             -- uuid4 made on the device
    slide_id      TEXT NOT NULL,                -- what the technician typed (lab number, slide label)
    notes         TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'finished')),
    started_at    TEXT NOT NULL,                -- UTC ISO-8601, device clock
    finished_at   TEXT,
    created_by    TEXT,
    summary_json  TEXT                          -- slide-level summary frozen when finished
);
CREATE INDEX samples_started ON samples (started_at DESC);

CREATE TABLE results (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,  -- monotonic sequence on this device
    id                 TEXT NOT NULL UNIQUE,               -- uuid4 made on the device
    device_id          TEXT NOT NULL,
    sample_id          TEXT REFERENCES samples (id),
    captured_at        TEXT NOT NULL,                      -- UTC ISO-8601, device clock (may be wrong)
    monotonic_ns       INTEGER,                            -- time.monotonic_ns() at capture
    boot_id            TEXT,                               -- which boot the monotonic clock belongs to
    source             TEXT NOT NULL CHECK (source IN ('camera', 'upload', 'review')),
    kind               TEXT NOT NULL DEFAULT 'classification' CHECK (kind IN ('classification', 'review')),
    review_of          TEXT REFERENCES results (id),       -- a review points at the record it reviews
    models_json        TEXT NOT NULL DEFAULT '[]',         -- [{"name": ..., "sha256": ...}]
    probabilities_json TEXT NOT NULL DEFAULT '{}',         -- {"Benign": 0.01, ...}
    label              TEXT NOT NULL,                      -- arg-max label (or the reviewer's label)
    confidence         REAL NOT NULL DEFAULT 0,
    abstained          INTEGER NOT NULL DEFAULT 0,
    reason             TEXT,                               -- why abstained
    quality_json       TEXT NOT NULL DEFAULT '{}',
    image_sha256       TEXT,                               -- JPEG stored as images/<aa>/<sha256>.jpg
    heatmap_sha256     TEXT,
    filename           TEXT,                               -- uploaded file's (sanitised) name
    reviewer           TEXT,
    comment            TEXT,
    sync_state         TEXT NOT NULL DEFAULT 'pending'
                       CHECK (sync_state IN ('pending', 'sending', 'synced', 'rejected')),
    sync_error         TEXT,
    synced_at          TEXT
);
CREATE INDEX results_captured ON results (captured_at DESC, seq DESC);
CREATE INDEX results_sample ON results (sample_id, seq DESC);
CREATE INDEX results_label ON results (label, seq DESC);
CREATE INDEX results_abstained ON results (abstained, seq DESC);
CREATE INDEX results_review_of ON results (review_of);
CREATE INDEX results_sync ON results (sync_state, seq);
CREATE INDEX results_image ON results (image_sha256);

CREATE TABLE images (
    sha256      TEXT PRIMARY KEY,
    bytes       INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    synced      INTEGER NOT NULL DEFAULT 0,   -- the hub confirmed it has these bytes
    deleted_at  TEXT                          -- removed by retention (only ever after synced)
);
CREATE INDEX images_retention ON images (synced, deleted_at, created_at);

CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT NOT NULL,
    level    TEXT NOT NULL,                   -- info | warning | error
    source   TEXT NOT NULL,                   -- camera | store | sync | watchdog | ...
    message  TEXT NOT NULL
);

CREATE TABLE users (
    name           TEXT PRIMARY KEY,
    role           TEXT NOT NULL CHECK (role IN ('technician', 'admin')),
    password_hash  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    disabled       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name   TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    key_hash    TEXT NOT NULL UNIQUE,         -- sha256 of the key; the key itself is shown once
    created_at  TEXT NOT NULL,
    last_used   TEXT
);

CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"""

M002_SESSIONS = """
CREATE TABLE web_sessions (
    id_hash     TEXT PRIMARY KEY,             -- sha256 of the session id kept in the signed cookie
    user_name   TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL                 -- UTC ISO-8601; logout / password change delete the row
);
CREATE INDEX web_sessions_user ON web_sessions (user_name);
CREATE INDEX results_heatmap ON results (heatmap_sha256);  -- the orphan sweep looks images up by both
"""

M003_ACQUISITION = """
-- the scale each record was classified at and the calibration profile in force
ALTER TABLE results ADD COLUMN um_per_px REAL;      -- µm per pixel of the image as classified (NULL: unknown)
ALTER TABLE results ADD COLUMN profile TEXT;        -- name of the station's calibration profile (NULL: none)
"""

M004_USER_LANGUAGE = """
-- the page's language each user chose (NULL: the browser's Accept-Language)
ALTER TABLE users ADD COLUMN language TEXT;
"""

M005_CELLS = """
-- Records of a cell bundle (kind 'cells') and their counted white cells. SQLite cannot change a CHECK
-- constraint in place, so `results` is rebuilt (the documented create-copy-drop-rename procedure;
-- `migrate` runs it with foreign keys off and checks them before committing).
CREATE TABLE results_new (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT NOT NULL UNIQUE,
    device_id          TEXT NOT NULL,
    sample_id          TEXT REFERENCES samples (id),
    captured_at        TEXT NOT NULL,
    monotonic_ns       INTEGER,
    boot_id            TEXT,
    source             TEXT NOT NULL CHECK (source IN ('camera', 'upload', 'review')),
    kind               TEXT NOT NULL DEFAULT 'classification'
                       CHECK (kind IN ('classification', 'review', 'cells')),
    review_of          TEXT REFERENCES results (id),
    models_json        TEXT NOT NULL DEFAULT '[]',
    probabilities_json TEXT NOT NULL DEFAULT '{}',
    label              TEXT NOT NULL,
    confidence         REAL NOT NULL DEFAULT 0,
    abstained          INTEGER NOT NULL DEFAULT 0,
    reason             TEXT,
    quality_json       TEXT NOT NULL DEFAULT '{}',
    image_sha256       TEXT,
    heatmap_sha256     TEXT,
    filename           TEXT,
    reviewer           TEXT,
    comment            TEXT,
    sync_state         TEXT NOT NULL DEFAULT 'pending'
                       CHECK (sync_state IN ('pending', 'sending', 'synced', 'rejected')),
    sync_error         TEXT,
    synced_at          TEXT,
    um_per_px          REAL,
    profile            TEXT,
    sync_again         INTEGER NOT NULL DEFAULT 0  -- a cell was reviewed while the record was being sent
);
INSERT INTO results_new (seq, id, device_id, sample_id, captured_at, monotonic_ns, boot_id, source, kind,
    review_of, models_json, probabilities_json, label, confidence, abstained, reason, quality_json,
    image_sha256, heatmap_sha256, filename, reviewer, comment, sync_state, sync_error, synced_at,
    um_per_px, profile)
SELECT seq, id, device_id, sample_id, captured_at, monotonic_ns, boot_id, source, kind,
    review_of, models_json, probabilities_json, label, confidence, abstained, reason, quality_json,
    image_sha256, heatmap_sha256, filename, reviewer, comment, sync_state, sync_error, synced_at,
    um_per_px, profile
FROM results ORDER BY seq;
-- the sequence never goes back, even past records a restore removed
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'results'), 0))
WHERE name = 'results_new';
DROP TABLE results;
ALTER TABLE results_new RENAME TO results;
CREATE INDEX results_captured ON results (captured_at DESC, seq DESC);
CREATE INDEX results_sample ON results (sample_id, seq DESC);
CREATE INDEX results_label ON results (label, seq DESC);
CREATE INDEX results_abstained ON results (abstained, seq DESC);
CREATE INDEX results_review_of ON results (review_of);
CREATE INDEX results_sync ON results (sync_state, seq);
CREATE INDEX results_image ON results (image_sha256);
CREATE INDEX results_heatmap ON results (heatmap_sha256);

-- One row per detected cell of a 'cells' record (device.cells.record.CellRecord); written in the
-- record's transaction. The primary key (record_id, cell_index) is also the index by record.
CREATE TABLE cells (
    record_id          TEXT NOT NULL REFERENCES results (id),
    cell_index         INTEGER NOT NULL,             -- order in its frame; a review names record + index
    x0                 INTEGER NOT NULL,             -- box in the stored frame's pixels
    y0                 INTEGER NOT NULL,
    x1                 INTEGER NOT NULL,
    y1                 INTEGER NOT NULL,
    x                  REAL NOT NULL,                -- centre, frame pixels
    y                  REAL NOT NULL,
    kind               TEXT NOT NULL,                -- detector: white | platelet | other
    state              TEXT NOT NULL CHECK (state IN ('blast', 'not_blast', 'unclassified')),
    label              TEXT,                         -- the named type (a bundle label id), NULL: not named
    p_blast            REAL NOT NULL DEFAULT 0,
    probabilities_json TEXT NOT NULL DEFAULT '{}',
    reason             TEXT,
    reviewed_label     TEXT,                         -- a bundle label id or 'not_a_cell'
    reviewer           TEXT,
    reviewed_at        TEXT,
    PRIMARY KEY (record_id, cell_index)
) WITHOUT ROWID;
"""

MIGRATIONS: list[str] = [M001_CORE, M002_SESSIONS, M003_ACQUISITION, M004_USER_LANGUAGE, M005_CELLS]
