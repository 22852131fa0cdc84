// Independently written servers for tests/tests/real_oidc_e2e.rs, in one Node process:
//
// * the authorization server is panva's oidc-provider (an OpenID Certified provider) with
//   our configuration only: dynamic client registration, PKCE required, resource indicators
//   issuing JWT access tokens for the MCP server, refresh tokens rotated on every use,
//   revocation, introspection. Its login and consent pages are ours: a test user who
//   approves whatever is asked (the only part of an authorization server a deployment
//   writes itself); every protocol decision stays the library's.
// * the protected MCP server is the official MCP TypeScript SDK (Streamable HTTP, stateless),
//   guarded by the SDK's bearer middleware and RFC 9728 metadata router; tokens are checked
//   as JWTs against the provider's JWKS (jose).
//
//   node servers.mjs [--access-token-ttl SECS]
//
// Prints one JSON line `{"issuer", "mcp", "test"}` once both listen on 127.0.0.1 (URLs with
// the host name `localhost`), then serves until stdin closes or the process is signalled.
// `GET <test>/state` shows the provider's own records (grants, refresh tokens, which were
// consumed) and what it did, so the test can check the provider's side of each step.

import http from 'node:http';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';

import Provider, { errors } from 'oidc-provider';
import express from 'express';
import { createRemoteJWKSet, exportJWK, generateKeyPair, jwtVerify } from 'jose';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import {
  getOAuthProtectedResourceMetadataUrl,
  mcpAuthMetadataRouter,
} from '@modelcontextprotocol/sdk/server/auth/router.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';

const { values: args } = parseArgs({
  options: { 'access-token-ttl': { type: 'string', default: '600' } },
});
const accessTokenTtl = Number(args['access-token-ttl']);
if (!Number.isInteger(accessTokenTtl) || accessTokenTtl < 1) {
  throw new Error(`--access-token-ttl must be a positive integer, got ${args['access-token-ttl']}`);
}

/** The scope every tool needs, and the one a single tool adds (the step-up). */
const BASE_SCOPE = 'mcp:tools';
const STEP_UP_SCOPE = 'mcp:admin';
const TEST_ACCOUNT = 'test-user-7f3a';

/** Both servers bind before they are built: each must know its own URL. */
async function listen(server) {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return `http://localhost:${server.address().port}`;
}

// The provider's storage, ours so the test can read the provider's own records. Same
// contract as the library's in-memory adapter (upsert/find/consume/destroy/revokeByGrantId).
const store = new Map();
class RecordingAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : undefined;
    store.set(this.key(id), { model: this.model, id, payload: { ...payload }, expiresAt });
  }
  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry || (entry.expiresAt && entry.expiresAt < Date.now())) return undefined;
    return { ...entry.payload };
  }
  async findByUid(uid) {
    for (const entry of store.values()) {
      if (entry.model === this.model && entry.payload.uid === uid) return this.find(entry.id);
    }
    return undefined;
  }
  async findByUserCode(userCode) {
    for (const entry of store.values()) {
      if (entry.model === this.model && entry.payload.userCode === userCode) return this.find(entry.id);
    }
    return undefined;
  }
  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const [key, entry] of store) {
      if (entry.payload.grantId === grantId) store.delete(key);
    }
  }
}

const asServer = http.createServer();
const mcpServer = http.createServer();
const issuer = await listen(asServer);
const mcpOrigin = await listen(mcpServer);
const mcpUrl = `${mcpOrigin}/mcp`;

// RS256: the OpenID default for ID tokens (what clients that name no algorithm get).
const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await exportJWK(privateKey)), alg: 'RS256', use: 'sig', kid: 'k1' };

const counts = { authorizations: 0, consents: 0, refreshes: 0, refresh_failures: 0, revocations: 0 };
const authorizeRequests = [];

const provider = new Provider(issuer, {
  adapter: RecordingAdapter,
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'offline_access', BASE_SCOPE, STEP_UP_SCOPE],
  claims: { openid: ['sub'], email: ['email'] },
  findAccount: (_ctx, sub) => ({
    accountId: sub,
    claims: () => ({ sub, email: 'test.user@example.test' }),
  }),
  pkce: { required: () => true },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: accessTokenTtl,
    AuthorizationCode: 60,
    Grant: 24 * 3600,
    IdToken: 3600,
    Interaction: 600,
    RefreshToken: 24 * 3600,
    Session: 24 * 3600,
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      useGrantedResource: () => true,
      defaultResource: () => undefined,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== mcpUrl) throw new errors.InvalidTarget();
        return {
          scope: `${BASE_SCOPE} ${STEP_UP_SCOPE}`,
          audience: mcpUrl,
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.on('authorization.accepted', () => { counts.authorizations += 1; });
provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params.grant_type === 'refresh_token') counts.refreshes += 1;
});
provider.on('grant.error', (ctx) => {
  if (ctx.oidc.params?.grant_type === 'refresh_token') counts.refresh_failures += 1;
});
provider.on('revocation.success', () => { counts.revocations += 1; });

// The test user's browser: signs in and approves what the client asked for. The library
// decides which prompts run (login, then consent — always consent for prompt=consent).
async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === 'login') {
      await provider.interactionFinished(req, res, { login: { accountId: TEST_ACCOUNT } }, {
        mergeWithLastSubmission: false,
      });
      return;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    counts.consents += 1;
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  } catch (err) {
    res.statusCode = 500;
    res.end(`interaction failed: ${err.message}`);
  }
}

const providerCallback = provider.callback();
asServer.on('request', (req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/interaction/')) return interaction(req, res);
  // Authorization requests as the client sent them (the library then drops what it
  // ignores, such as offline_access without prompt=consent).
  const url = new URL(req.url, issuer);
  if (req.method === 'GET' && url.pathname === '/auth') {
    authorizeRequests.push(Object.fromEntries(url.searchParams));
  }
  return providerCallback(req, res);
});

// --- the protected MCP server (official SDK) ---

const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri));
const verifier = {
  async verifyAccessToken(token) {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, jwks, { issuer, audience: mcpUrl, typ: 'at+jwt' }));
    } catch (err) {
      throw new InvalidTokenError(`access token rejected: ${err.code ?? err.message}`);
    }
    return {
      token,
      clientId: payload.client_id,
      scopes: (payload.scope ?? '').split(' ').filter(Boolean),
      expiresAt: payload.exp,
      resource: new URL(mcpUrl),
      extra: { sub: payload.sub },
    };
  },
};
const resourceMetadataUrl = getOAuthProtectedResourceMetadataUrl(new URL(mcpUrl));
const bearer = requireBearerAuth({
  verifier,
  requiredScopes: [BASE_SCOPE],
  resourceMetadataUrl,
  expectedResource: new URL(mcpUrl),
});
// The admin tool needs the step-up scope: the SDK's middleware answers 403
// insufficient_scope naming both scopes (SEP-2350 step-up).
const bearerForAdmin = requireBearerAuth({
  verifier,
  requiredScopes: [BASE_SCOPE, STEP_UP_SCOPE],
  resourceMetadataUrl,
  expectedResource: new URL(mcpUrl),
});
const callsAdminTool = (body) => [body].flat().some(
  (m) => m?.method === 'tools/call' && m.params?.name === 'admin_whoami',
);

let toolCalls = 0;
function buildMcpServer() {
  const server = new McpServer({ name: 'real-oidc-test-server', version: '1.0.0' });
  // A tool without an input schema is called with the request context only.
  const whoami = (extra) => {
    toolCalls += 1;
    const text = JSON.stringify({ sub: extra.authInfo?.extra?.sub, scopes: extra.authInfo?.scopes });
    return { content: [{ type: 'text', text }] };
  };
  server.registerTool('whoami', { description: 'Who the access token speaks for' }, whoami);
  server.registerTool('admin_whoami', { description: `Same, but needs ${STEP_UP_SCOPE}` }, whoami);
  return server;
}

const app = express();
app.use(express.json());
app.use(mcpAuthMetadataRouter({
  oauthMetadata: discovery,
  resourceServerUrl: new URL(mcpUrl),
  scopesSupported: [BASE_SCOPE],
  resourceName: 'mcp-authd real OIDC test server',
}));
app.post('/mcp', bearer, (req, res, next) => (callsAdminTool(req.body) ? bearerForAdmin(req, res, next) : next()),
  async (req, res) => {
    const server = buildMcpServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => { transport.close(); server.close(); });
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  });
// Stateless: no server-initiated stream, no session to delete.
app.get('/mcp', (_req, res) => res.status(405).set('Allow', 'POST').end());
app.delete('/mcp', (_req, res) => res.status(405).set('Allow', 'POST').end());

// The provider's records, for the test's assertions. Token values are the stored ids
// (oidc-provider's opaque refresh tokens are their ids).
app.get('/test/state', (_req, res) => {
  const live = (model) => [...store.values()].filter(
    (e) => e.model === model && !(e.expiresAt && e.expiresAt < Date.now()),
  );
  res.json({
    counts: { ...counts, tool_calls: toolCalls },
    authorize_requests: authorizeRequests,
    grants: live('Grant').map((e) => ({ id: e.id, client_id: e.payload.clientId, resources: e.payload.resources })),
    refresh_tokens: live('RefreshToken').map((e) => ({
      token: e.id,
      grant_id: e.payload.grantId,
      consumed: Boolean(e.payload.consumed),
      rotations: e.payload.rotations ?? 0,
      scope: e.payload.scope,
    })),
  });
});
mcpServer.on('request', app);

console.log(JSON.stringify({ issuer, mcp: mcpUrl, test: `${mcpOrigin}/test` }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
