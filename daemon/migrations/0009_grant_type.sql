-- How a grant's tokens are obtained and renewed: `authorization_code` (the browser login,
-- then refresh tokens), or a grant without a browser configured for its server:
-- `client_credentials`, `jwt_bearer` (an assertion such as a workload identity token) or
-- `enterprise` (an ID-JAG from the enterprise IdP, then the JWT-bearer grant).
ALTER TABLE grants ADD COLUMN grant_type TEXT NOT NULL DEFAULT 'authorization_code';
