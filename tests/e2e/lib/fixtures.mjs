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
