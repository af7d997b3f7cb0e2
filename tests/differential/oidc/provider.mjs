// A real OpenID Provider for the differential suite: panva's oidc-provider
// (OpenID Certified) on 127.0.0.1, configured from a JSON file that
// tests/differential/oidc_provider.py writes.
//
//   node provider.mjs CONFIG.json
//
// CONFIG.json:
//   port, issuer ("http://127.0.0.1:<port>", no trailing slash)
//   node_modules   folder holding oidc-provider (ES modules ignore NODE_PATH)
//   keys           private JWKs with kid and alg; the first of each alg signs
//   cookie_keys    secrets that sign the provider's cookies
//   clients        oidc-provider client metadata, plus optional `extra_claims`
//                  (added to client_credentials access tokens)
//   accounts       {sub, email, email_verified, name, roles, groups,
//                   password?, claims?}; login = sub or email
//   ttl            {AccessToken, IdToken, ...} seconds
//   resource_servers  [{resource, scope, alg, access_ttl, audience?}]
//   use_granted_resource     the token request may omit `resource` when the
//                            authorization request named one
//   conform_id_token_claims  true: scope claims only at userinfo (the
//                            provider's default); false: in the ID token too
//
// Besides the provider itself, two things only a test needs:
//   GET  /interaction/<uid>            minimal login/consent forms
//   POST /interaction/<uid>/login      login=<sub or email>&password=...
//   POST /interaction/<uid>/consent    grants what the client asked for
//   POST /interaction/<uid>/abort      access_denied
//   GET  /__test/jwks_fetches          {"count": n}: GETs of the jwks_uri
//   POST /__test/jwks_fetches/reset    sets it to 0
//
// Prints "oidc-provider ready <issuer>" once listening; SIGTERM/SIGINT close
// the listener and exit 0.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const cfgPath = process.argv[2];
if (!cfgPath) {
  console.error('usage: node provider.mjs CONFIG.json');
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));

// Resolve oidc-provider from the installed node_modules (target/diff-oidc).
const nodeModules = cfg.node_modules || process.env.DIFF_OIDC_NODE_MODULES;
const req = createRequire(path.join(nodeModules ? path.dirname(nodeModules) : process.cwd(), 'noop.js'));
const { default: Provider, errors } = await import(pathToFileURL(req.resolve('oidc-provider')).href);

const JWKS_PATH = '/jwks';
const accounts = cfg.accounts || [];
const resourceServers = new Map((cfg.resource_servers || []).map((rs) => [rs.resource, rs]));
const clientExtra = new Map((cfg.clients || []).map((c) => [c.client_id, c.extra_claims]));

function findAccountBy(loginOrSub) {
  if (typeof loginOrSub !== 'string') return undefined;
  const v = loginOrSub.trim();
  return accounts.find((a) => a.sub === v)
    || accounts.find((a) => a.email && a.email.toLowerCase() === v.toLowerCase());
}

function accountClaims(a) {
  const out = {
    sub: a.sub,
    email: a.email,
    email_verified: a.email_verified,
    name: a.name,
    preferred_username: a.preferred_username ?? a.sub,
    roles: a.roles,
    groups: a.groups,
    ...(a.claims || {}),
  };
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out;
}

const configuration = {
  clients: (cfg.clients || []).map(({ extra_claims: _ignored, ...meta }) => meta),
  jwks: { keys: cfg.keys },
  cookies: { keys: cfg.cookie_keys },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    roles: ['roles'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'roles', 'groups'],
  conformIdTokenClaims: cfg.conform_id_token_claims ?? false,
  pkce: { required: () => cfg.pkce_required ?? true },
  routes: { jwks: JWKS_PATH },
  ttl: {
    AccessToken: cfg.ttl?.AccessToken ?? 300,
    ClientCredentials: cfg.ttl?.ClientCredentials ?? cfg.ttl?.AccessToken ?? 300,
    IdToken: cfg.ttl?.IdToken ?? 300,
    AuthorizationCode: cfg.ttl?.AuthorizationCode ?? 60,
    RefreshToken: cfg.ttl?.RefreshToken ?? 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  clientBasedCORS: () => true,
  async findAccount(_ctx, id) {
    const a = findAccountBy(id);
    if (!a) return undefined;
    return {
      accountId: a.sub,
      async claims() {
        return accountClaims(a);
      },
    };
  },
  async extraTokenClaims(_ctx, token) {
    if (token.kind === 'ClientCredentials') {
      return clientExtra.get(token.clientId) || undefined;
    }
    if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
    const a = findAccountBy(token.accountId);
    if (!a) return undefined;
    return {
      roles: a.roles || [],
      groups: a.groups || [],
      realm_access: { roles: a.roles || [] },
      ...(a.email !== undefined ? { email: a.email } : {}),
      ...(a.token_claims || {}),
    };
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => cfg.use_granted_resource ?? true,
      async getResourceServerInfo(_ctx, resourceIndicator) {
        const rs = resourceServers.get(resourceIndicator);
        if (!rs) throw new errors.InvalidTarget();
        return {
          scope: rs.scope,
          audience: rs.audience || rs.resource,
          accessTokenTTL: rs.access_ttl ?? cfg.ttl?.AccessToken ?? 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: rs.alg || 'RS256' } },
        };
      },
    },
  },
};

const provider = new Provider(cfg.issuer, configuration);
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

// ---------------------------------------------------------------- interactions

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, inner) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(`<!DOCTYPE html><html><head><title>${esc(title)}</title></head><body>${inner}</body></html>`);
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { body += d; if (body.length > 65536) reject(new Error('body too large')); });
    req.on('end', () => resolve(Object.fromEntries(new URLSearchParams(body))));
    req.on('error', reject);
  });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction uid mismatch');
  const { prompt, params, session, grantId } = details;

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      return page(res, 200, 'Sign-in', `<h1>Sign-in</h1><p>client ${esc(params.client_id)}</p>
<form id="login" method="post" action="/interaction/${esc(uid)}/login">
<input type="hidden" name="prompt" value="login">
<input name="login" placeholder="account id or email" autofocus>
<input name="password" type="password" placeholder="password">
<button type="submit">Sign-in</button></form>
<form id="abort" method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`);
    }
    if (prompt.name === 'consent') {
      return page(res, 200, 'Authorize', `<h1>Authorize</h1><p>client ${esc(params.client_id)} asks for ${esc(params.scope || '')}</p>
<form id="consent" method="post" action="/interaction/${esc(uid)}/consent">
<input type="hidden" name="prompt" value="consent">
<button type="submit">Continue</button></form>
<form id="abort" method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`);
    }
    return page(res, 501, 'Unsupported', `<p>prompt ${esc(prompt.name)} not implemented</p>`);
  }

  if (req.method !== 'POST') return page(res, 405, 'Method not allowed', '');
  const form = await readForm(req);

  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  if (action === 'login') {
    if (prompt.name !== 'login') return page(res, 400, 'Error', '<p>not at the login prompt</p>');
    const a = findAccountBy(form.login);
    if (!a || (a.password !== undefined && a.password !== form.password)) {
      return page(res, 401, 'Sign-in', `<p id="error">invalid login</p>
<form id="login" method="post" action="/interaction/${esc(uid)}/login">
<input type="hidden" name="prompt" value="login"><input name="login"><input name="password" type="password">
<button type="submit">Sign-in</button></form>`);
    }
    return provider.interactionFinished(req, res, {
      login: { accountId: a.sub, amr: ['pwd'] },
    }, { mergeWithLastSubmission: false });
  }
  if (action === 'consent') {
    if (prompt.name !== 'consent') return page(res, 400, 'Error', '<p>not at the consent prompt</p>');
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const result = { consent: { grantId: await grant.save() } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  }
  return page(res, 404, 'Not found', '');
}

// ------------------------------------------------------------------- server

let jwksFetches = 0;
const callback = provider.callback();
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|consent|abort))?$/;

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, cfg.issuer);
  try {
    if (url.pathname === '/__test/jwks_fetches' && req.method === 'GET') {
      res.setHeader('Content-Type', 'application/json');
      return res.end(JSON.stringify({ count: jwksFetches }));
    }
    if (url.pathname === '/__test/jwks_fetches/reset' && req.method === 'POST') {
      jwksFetches = 0;
      res.setHeader('Content-Type', 'application/json');
      return res.end(JSON.stringify({ count: 0 }));
    }
    const m = INTERACTION.exec(url.pathname);
    if (m) return await interaction(req, res, m[1], m[2]);
    if (url.pathname === JWKS_PATH && req.method === 'GET') jwksFetches += 1;
    return callback(req, res);
  } catch (err) {
    console.error('interaction error', err);
    if (!res.headersSent) {
      return page(res, err.status || 500, 'Error', `<p id="error">${esc(err.name)}: ${esc(err.message)}</p>`);
    }
    return res.end();
  }
});
server.keepAliveTimeout = 2000;

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(cfg.port, '127.0.0.1', () => {
  console.log(`oidc-provider ready ${cfg.issuer}`);
});
