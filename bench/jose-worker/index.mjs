// The comparison point for the benchmarks: what a Workers user would write with `jose` —
// the same ID-token validation and an HMAC session-cookie check — run in the same workerd.
import { createLocalJWKSet, jwtVerify } from 'jose';

const enc = new TextEncoder();

async function hmacKey(secret) {
  return crypto.subtle.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
}

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/health') return new Response('ok');
    if (url.pathname !== '/bench' || request.method !== 'POST') return new Response('not found', { status: 404 });
    const { op, n, input } = await request.json();
    if (op === 'id_token') {
      const jwks = createLocalJWKSet(input.jwks);
      for (let i = 0; i < n; i += 1) {
        const { payload } = await jwtVerify(input.token, jwks, {
          issuer: input.issuer, audience: input.client_id, currentDate: new Date(input.now * 1000), clockTolerance: 60,
        });
        if (payload.nonce !== input.nonce) throw new Error('nonce');
      }
    } else if (op === 'cookie') {
      const key = await hmacKey('a-session-cookie-key-of-32-bytes-or-more');
      const id = 'AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM';
      const mac = new Uint8Array(await crypto.subtle.sign('HMAC', key, enc.encode(`session:bench:${id}`)));
      for (let i = 0; i < n; i += 1) {
        if (!(await crypto.subtle.verify('HMAC', key, mac, enc.encode(`session:bench:${id}`)))) throw new Error('mac');
      }
    } else {
      return new Response('unknown op', { status: 400 });
    }
    return Response.json({ op, n, ok: true });
  },
};
