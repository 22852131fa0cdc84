-- Who a grant is for, as the OpenID Connect id_token of its last login (or refresh) named
-- them: email, else preferred_username, else sub. Shown by `mcp-auth list`; never used to
-- decide anything. NULL when the authorization server issued no id_token.
ALTER TABLE grants ADD COLUMN account TEXT;
