-- Set just before a refresh request goes out, cleared when its result is committed: a
-- value found later means a refresh was interrupted (the daemon was killed, or the network
-- failed) after the authorization server may already have rotated the refresh token.
ALTER TABLE grants ADD COLUMN refresh_started_at INTEGER;
