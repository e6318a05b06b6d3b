// A real OpenID Provider for Gatehouse's tests: oidc-provider with a client-credentials
// client whose access tokens are JWTs for the audience "gatehouse".
//
//   node provider.mjs PORT KEYS_FILE
//
// Signing keys are read from KEYS_FILE (a private JWKS) when it exists, else generated and
// written there, so a test can forge tokens with the provider's own key, and rotate keys by
// restarting the provider with a new file. Prints "ready" once listening.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, keysFile] = process.argv.slice(2);
if (!port || !keysFile) {
  console.error('usage: node provider.mjs PORT KEYS_FILE');
  process.exit(2);
}

function newKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const kid = () => randomBytes(6).toString('hex');
  return {
    keys: [
      { ...rsa, kid: `rsa-${kid()}`, alg: 'RS256', use: 'sig' },
      { ...ec, kid: `ec-${kid()}`, alg: 'ES256', use: 'sig' },
    ],
  };
}

let jwks;
if (existsSync(keysFile)) {
  jwks = JSON.parse(readFileSync(keysFile, 'utf8'));
} else {
  jwks = newKeys();
  writeFileSync(keysFile, JSON.stringify(jwks), { mode: 0o600 });
}

// Groups per client, as a directory would hand them out; `gha` stands for a CI system
// whose tokens say which repository and branch the job runs for, and carry no groups.
const groups = { ci: ['deployers', 'analysts'], reporting: ['analysts'], gha: [] };
const jobClaims = { gha: { repository: 'acme/api', ref: 'refs/heads/main' } };

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  jwks,
  clients: [
    ...Object.keys(groups).map((id) => ({
      client_id: id,
      client_secret: `${id}-secret`,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    })),
    // What `gatehouse login` is registered as: a public client (no secret) using the
    // device flow or the authorization code with PKCE, with refresh tokens.
    {
      client_id: 'gatehouse-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'authorization_code', 'refresh_token'],
      // A native app's loopback redirect: any port is accepted (RFC 8252 §7.3).
      redirect_uris: ['http://127.0.0.1/callback'],
      response_types: ['code'],
    },
  ],
  // People sign in through the provider's development login page, which accepts any user
  // name; the test drives it like a browser would (approve-in-browser.mjs).
  findAccount: (ctx, sub) => ({
    accountId: sub,
    claims: () => ({ sub, groups: ['analysts'] }),
  }),
  scopes: ['openid', 'offline_access', 'db'],
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:gatehouse',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'db',
        audience: 'gatehouse',
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: process.env.TOKEN_ALG || 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => ({
    groups: token.accountId ? ['analysts'] : groups[token.clientId] || [],
    ...(jobClaims[token.clientId] || {}),
  }),
  // Refresh tokens for the device-flow client whenever it asks for offline_access.
  issueRefreshToken: async (ctx, client, code) =>
    client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
