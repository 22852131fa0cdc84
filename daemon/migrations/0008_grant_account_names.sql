-- no-transaction
-- Several accounts per server: grants are kept per (resource, issuer, account_name).
-- `account_name` is the name the user gave (`mcp-auth login --account NAME`); '' is the
-- default account, which every grant made before this migration belongs to (NOT NULL, so
-- that UNIQUE holds for it too). `login_hint` is the OpenID Connect login_hint the
-- account's last login sent (what the user typed, not a secret), sent again by logins the
-- daemon starts itself. SQLite cannot change a UNIQUE constraint, so the table is rebuilt
-- as in 0002, naming every column (a column added later by ALTER TABLE comes after this).
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE grants_new (
    id                  TEXT PRIMARY KEY NOT NULL,
    server_url          TEXT NOT NULL,
    resource            TEXT NOT NULL,
    issuer              TEXT NOT NULL,
    registration_id     TEXT NOT NULL REFERENCES registrations (id),
    scopes              TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('active', 'needs_login')),
    needs_login_reason  TEXT,
    has_refresh_token   INTEGER NOT NULL,
    access_expires_at   INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_used_at        INTEGER,
    last_refresh_at     INTEGER,
    refresh_started_at  INTEGER,
    account             TEXT,
    account_name        TEXT NOT NULL DEFAULT '',
    login_hint          TEXT,
    UNIQUE (resource, issuer, account_name)
);
INSERT INTO grants_new (id, server_url, resource, issuer, registration_id, scopes, state,
                        needs_login_reason, has_refresh_token, access_expires_at, created_at,
                        updated_at, last_used_at, last_refresh_at, refresh_started_at, account)
    SELECT id, server_url, resource, issuer, registration_id, scopes, state,
           needs_login_reason, has_refresh_token, access_expires_at, created_at,
           updated_at, last_used_at, last_refresh_at, refresh_started_at, account
    FROM grants;
DROP TABLE grants;
ALTER TABLE grants_new RENAME TO grants;
CREATE INDEX grants_by_server ON grants (server_url, account_name);
PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
