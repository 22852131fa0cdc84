-- confirm_clients: what the user answered when a program first asked for a grant's token.
-- `always` lets the program take the grant's tokens without asking again, `deny` refuses it
-- without asking (`allow once` is never stored). `program` is the executable's path, or the
-- script an interpreter runs. The decisions go with their grant.
CREATE TABLE client_decisions (
    grant_id   TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    program    TEXT NOT NULL,
    decision   TEXT NOT NULL CHECK (decision IN ('always', 'deny')),
    decided_at INTEGER NOT NULL,            -- Unix seconds
    PRIMARY KEY (grant_id, program)
);
