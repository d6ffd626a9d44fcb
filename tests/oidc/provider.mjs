// A real OpenID Connect provider for Portcullis' tests: the certified
// `oidc-provider` package with its development login pages.
//
//   npm ci --prefix tests/oidc
//   node tests/oidc/provider.mjs PORT [--exit-on-stdin-close]
//
// It listens on 127.0.0.1:PORT with the issuer `http://127.0.0.1:PORT` and
// prints `ready` on stdout once it accepts connections. With
// `--exit-on-stdin-close` it exits when its standard input closes, so a test
// that dies without killing it does not leave it behind.
//
// The development login page accepts any login and any password. The account
// is named by the login: `sub` is the login, `email` the login when it
// contains `@` (else `LOGIN@example.com`), and `groups` comes from GROUPS.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const GROUPS = {
  'alice@example.com': ['eng'],
  'dba@example.com': ['eng', 'dba'],
};

const args = process.argv.slice(2);
const port = Number(args.find((arg) => !arg.startsWith('--')));
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node provider.mjs PORT [--exit-on-stdin-close]');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// Fresh signing keys on every start: an RSA key for RS256 ID tokens (the
// default algorithm) and a P-256 key, so the key set has more than one key
// and verifiers must choose by `kid`.
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });

function account(login) {
  const email = login.includes('@') ? login : `${login}@example.com`;
  return {
    accountId: login,
    async claims() {
      return { sub: login, email, groups: GROUPS[email] ?? [] };
    },
  };
}

const configuration = {
  clients: [
    {
      client_id: 'portcullis',
      client_secret: 'portcullis-test-secret',
      // A native client may use any port on a loopback redirect URI
      // (RFC 8252 §7.3): the port is ignored when the URI is compared.
      application_type: 'native',
      // `/callback`: the gateway's CLI login; `/auth/callback`: the web
      // console's login (the browser end-to-end test in tests/console).
      redirect_uris: ['http://127.0.0.1/callback', 'http://127.0.0.1/auth/callback'],
      grant_types: [
        'authorization_code',
        'refresh_token',
        'urn:ietf:params:oauth:grant-type:device_code',
      ],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  async findAccount(_ctx, sub) {
    return account(sub);
  },
  claims: {
    openid: ['sub'],
    email: ['email'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'groups', 'offline_access'],
  // Without this, `email` and `groups` go to the userinfo endpoint only, not
  // into the ID token that the gateway verifies.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: {
    required: () => true,
  },
  // oidc-provider drops `offline_access` from an authorization request that
  // has no `prompt=consent` (as OpenID Connect Core says), which would leave
  // the login flows without a refresh token; the test client may always have
  // one.
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    DeviceCode: 600,
    Grant: 86400,
    IdToken: 3600,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 86400,
  },
  cookies: {
    keys: [randomBytes(32).toString('hex')],
  },
  jwks: {
    keys: [
      { ...rsa, kid: 'rsa-1', use: 'sig', alg: 'RS256' },
      { ...ec, kid: 'ec-1', use: 'sig', alg: 'ES256' },
    ],
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, error) => {
  console.error('server_error', error);
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log('ready');
});
server.on('error', (error) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${error.message}`);
  process.exit(1);
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (args.includes('--exit-on-stdin-close')) {
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}
