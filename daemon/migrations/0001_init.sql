-- Non-secret metadata only. Refresh tokens and client secrets live in the secret store,
-- keyed by the ids below; access tokens live in the daemon's memory.

CREATE TABLE authorization_servers (
    issuer      TEXT PRIMARY KEY NOT NULL,
    metadata    TEXT NOT NULL,          -- RFC 8414 document as fetched and checked (JSON)
    fetched_at  INTEGER NOT NULL
);

CREATE TABLE registrations (
    id                          TEXT PRIMARY KEY NOT NULL,
    issuer                      TEXT NOT NULL,
    kind                        TEXT NOT NULL CHECK (kind IN ('dynamic', 'pre-registered')),
    client_id                   TEXT NOT NULL,
    redirect_uri                TEXT,
    token_endpoint_auth_method  TEXT NOT NULL,
    has_client_secret           INTEGER NOT NULL,
    created_at                  INTEGER NOT NULL
);
CREATE INDEX registrations_by_issuer ON registrations (issuer, kind);

CREATE TABLE grants (
    id                  TEXT PRIMARY KEY NOT NULL,
    server_url          TEXT NOT NULL,
    resource            TEXT NOT NULL,
    issuer              TEXT NOT NULL,
    registration_id     TEXT NOT NULL REFERENCES registrations (id),
    scopes              TEXT NOT NULL,      -- space-separated, as granted
    state               TEXT NOT NULL CHECK (state IN ('active', 'needs_login')),
    needs_login_reason  TEXT,
    has_refresh_token   INTEGER NOT NULL,
    access_expires_at   INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_used_at        INTEGER,
    last_refresh_at     INTEGER,
    UNIQUE (resource, issuer)
);
CREATE INDEX grants_by_server ON grants (server_url);
