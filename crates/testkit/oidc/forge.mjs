// Makes tokens the way an attacker or a broken provider would, for Gatehouse's refusal tests.
//
//   node forge.mjs KEYS_FILE MODE CLAIMS_JSON
//
// MODE:
//   rs256         signed with the provider's own RSA key (valid unless the claims are not)
//   none          "alg": "none", no signature
//   hs256-pubkey  HMAC-SHA256 keyed with the provider's RSA public key (PEM), the classic
//                 algorithm-confusion forgery
//   unknown-kid   RS256 with a key the provider never published
// Prints the token.

import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [keysFile, mode, claimsJson] = process.argv.slice(2);
const jwks = JSON.parse(readFileSync(keysFile, 'utf8'));
const rsa = jwks.keys.find((k) => k.kty === 'RSA');
const claims = JSON.parse(claimsJson);
const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function rs256(header, privateKey) {
  const input = `${b64(header)}.${b64(claims)}`;
  const signature = sign('sha256', Buffer.from(input), privateKey).toString('base64url');
  return `${input}.${signature}`;
}

let token;
switch (mode) {
  case 'rs256':
    token = rs256({ alg: 'RS256', typ: 'at+jwt', kid: rsa.kid }, createPrivateKey({ key: rsa, format: 'jwk' }));
    break;
  case 'none':
    token = `${b64({ alg: 'none', typ: 'JWT', kid: rsa.kid })}.${b64(claims)}.`;
    break;
  case 'hs256-pubkey': {
    const pem = createPublicKey({ key: rsa, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const input = `${b64({ alg: 'HS256', typ: 'JWT', kid: rsa.kid })}.${b64(claims)}`;
    token = `${input}.${createHmac('sha256', pem).update(input).digest('base64url')}`;
    break;
  }
  case 'unknown-kid': {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    token = rs256({ alg: 'RS256', typ: 'at+jwt', kid: 'never-published' }, privateKey);
    break;
  }
  default:
    console.error(`unknown mode ${mode}`);
    process.exit(2);
}
console.log(token);
