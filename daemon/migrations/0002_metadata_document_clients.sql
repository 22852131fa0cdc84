-- no-transaction
-- Client ID Metadata Documents (CIMD) are a third kind of client registration. SQLite cannot
-- alter a CHECK constraint, so the table is rebuilt (the documented 12-step procedure):
-- foreign keys are switched off only around the rebuild, and checked before the commit.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE registrations_new (
    id                          TEXT PRIMARY KEY NOT NULL,
    issuer                      TEXT NOT NULL,
    kind                        TEXT NOT NULL
                                CHECK (kind IN ('dynamic', 'pre-registered', 'metadata-document')),
    client_id                   TEXT NOT NULL,
    redirect_uri                TEXT,
    token_endpoint_auth_method  TEXT NOT NULL,
    has_client_secret           INTEGER NOT NULL,
    created_at                  INTEGER NOT NULL
);
INSERT INTO registrations_new SELECT * FROM registrations;
DROP TABLE registrations;
ALTER TABLE registrations_new RENAME TO registrations;
CREATE INDEX registrations_by_issuer ON registrations (issuer, kind);
PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
