// Verifying Portcullis's signed assertion at the origin, in Node.js with `jose`
// (npm install jose). The origin trusts the X-Portcullis-* headers only after this passes.
//
// As a library:
//   import { assertionVerifier } from './node.mjs';
//   const verify = assertionVerifier({
//     jwks: 'https://app.example.com/.well-known/portcullis/jwks.json',
//     issuer: 'https://auth.example.com',   // gateway.issuer
//     audience: 'acme',                      // the tenant id
//   });
//   const claims = await verify(req.headers['x-portcullis-assertion']); // throws if invalid
//
// From the command line (prints the claims, exit status 1 when the assertion is refused):
//   node node.mjs --jwks URL_OR_FILE --issuer ISS --audience AUD TOKEN
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify } from 'jose';

export function assertionVerifier({ jwks, issuer, audience }) {
  // A remote set is cached and refetched when an unknown key id appears (key rotation).
  const keys = /^https?:\/\//.test(jwks)
    ? createRemoteJWKSet(new URL(jwks))
    : createLocalJWKSet(JSON.parse(fs.readFileSync(jwks, 'utf8')));
  return async (token) => {
    if (!token) throw new Error('no X-Portcullis-Assertion header');
    const { payload } = await jwtVerify(token, keys, {
      issuer,
      audience,
      algorithms: ['ES256', 'EdDSA'],
      requiredClaims: ['sub', 'exp', 'iat'],
      clockTolerance: 60,
    });
    return payload; // sub, email, name, groups, roles, amr, idp
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values, positionals } = parseArgs({
    options: { jwks: { type: 'string' }, issuer: { type: 'string' }, audience: { type: 'string' } },
    allowPositionals: true,
  });
  try {
    const claims = await assertionVerifier(values)(positionals[0]);
    console.log(JSON.stringify(claims));
  } catch (e) {
    console.error(`refused: ${e.message}`);
    process.exit(1);
  }
}
