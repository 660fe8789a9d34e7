// Makes the signed SAML responses the benchmarks validate (about 4 KB, 8 KB and 40 KB), with
// a 60-year validity so the committed files keep working.
// Run: node scripts/make-bench-fixtures.mjs [4k|8k|40k ...]   (default: all three)
import fs from 'node:fs';
import { startSamlIdp } from '../tests/e2e/peers/saml_idp.mjs';
async function make(n, name, { minimal = false } = {}) {
  const attrs = minimal
    ? { email: 'alice@example.com', groups: ['engineering'] }
    : { email: 'alice@example.com', displayName: 'Alice Example', givenName: 'Alice', surname: 'Example', groups: ['engineering', 'admins'] };
  for (let i = 0; i < n; i++) attrs[`urn:example:attribute:${String(i).padStart(3, '0')}`] = [`value-${i}-${'x'.repeat(60)}`];
  const idp = await startSamlIdp({ key: 'rsa', sign: 'assertion', entityId: 'https://idp.example.com/metadata', lifetime: 60 * 365 * 24 * 3600, attributes: attrs });
  const r = await idp.respond({ acsUrl: 'https://sp.example.com/saml/acs', requestId: '_req-6c1e8f4a', spEntityId: 'https://sp.example.com/saml/metadata' });
  const xml = Buffer.from(r.samlResponse, 'base64').toString();
  fs.writeFileSync(new URL(`../tests/fixtures/saml/signed/${name}`, import.meta.url), xml);
  console.log(name, xml.length);
  await idp.close();
}
const wanted = process.argv.slice(2);
const want = (size) => wanted.length === 0 || wanted.includes(size);
// The reference size: a typical IdP Response with a signed assertion and two attributes.
if (want('4k')) await make(0, 'bench-4k.xml', { minimal: true });
if (want('8k')) await make(12, 'bench-8k.xml');
if (want('40k')) await make(130, 'bench-40k.xml');
