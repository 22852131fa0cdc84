-- Every access token handed out over the socket: when, for which grant, to which process.
-- Never the token. Kept after a grant is forgotten (no foreign key): it is a record of
-- what happened. The newest 10,000 rows are kept.
CREATE TABLE token_hand_outs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,           -- Unix seconds
    grant_id    TEXT NOT NULL,
    server_url  TEXT NOT NULL,              -- as the caller asked for it
    peer_pid    INTEGER,
    peer_uid    INTEGER,
    peer_exe    TEXT                        -- /proc/<pid>/exe on Linux, else NULL
);
CREATE INDEX token_hand_outs_by_grant ON token_hand_outs (grant_id, id);
