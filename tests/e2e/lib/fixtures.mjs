// Shared pieces of end-to-end tests: secrets, configuration builders, log helpers.
import crypto from 'node:crypto';

/** Fresh gateway secrets: a cookie key and a P-256 assertion key (PKCS#8, base64 DER). */
export function gatewaySecrets(extra = {}) {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    COOKIE_KEY: crypto.randomBytes(48).toString('base64'),
    ASSERTION_KEY: privateKey.export({ type: 'pkcs8', format: 'der' }).toString('base64'),
    ...extra,
  };
}

export function gatewaySection(extra = {}) {
  return {
    issuer: 'https://gateway.test',
    cookie_keys: [{ id: 'c1', secret: 'COOKIE_KEY' }],
    assertion_keys: [{ id: 'a1', secret: 'ASSERTION_KEY' }],
    ...extra,
  };
}

export function oidcProvider(name, op, clientId, extra = {}) {
  return {
    type: 'oidc',
    name,
    label: `Sign in ${name}`,
    issuer: op.issuer,
    client_id: clientId,
    client_secret: `SECRET_${name.toUpperCase().replace(/-/g, '_')}`,
    scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
    ...extra,
  };
}

/** Log lines of a gateway that are JSON objects with `event` (optionally filtered). */
export function events(gw, pred = () => true) {
  return gw.logLines((l) => typeof l === 'object' && l !== null && 'event' in l).filter(pred);
}

/** Waits until a JSON log line matches `pred` (log output arrives asynchronously). */
export async function waitForEvent(gw, pred, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = events(gw, pred);
    if (hit.length) return hit[hit.length - 1];
    if (Date.now() > deadline) {
      throw new Error(`no log line matched within ${timeoutMs} ms; last lines:\n${gw.logs.slice(-15).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The reference id shown on an error page. */
export function pageReference(html) {
  const m = html.match(/Reference: <code>([a-z0-9]+)<\/code>/);
  return m ? m[1] : null;
}

/** RFC 4648 base32 (no padding) to bytes. */
export function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = text.toUpperCase().replace(/[^A-Z2-7]/g, '');
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    value = (value << 5) | alphabet.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 6238 TOTP (SHA-1, 6 digits, 30 s) computed independently of the gateway. */
export function totp(secret, time = Date.now() / 1000, { period = 30, digits = 6, algorithm = 'sha1' } = {}) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(time / period)));
  const mac = crypto.createHmac(algorithm, secret).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const bin = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(bin % 10 ** digits).padStart(digits, '0');
}

/** Waits until the next TOTP step starts (so a fresh code is not the one just used). */
export async function nextStep(period = 30) {
  const now = Date.now() / 1000;
  const wait = (Math.floor(now / period) + 1) * period - now + 0.2;
  await new Promise((r) => setTimeout(r, wait * 1000));
}
