-- Identical hand-outs (same grant, server and process) written in one batch of the audit
-- writer share a row: `count` of them, the last at `at`. At thousands of tokens a second
-- the log stays a log instead of a copy of the traffic.
ALTER TABLE token_hand_outs ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
