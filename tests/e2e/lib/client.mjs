// Browser-like HTTP client for end-to-end tests: manual redirects and a
// per-host cookie jar.
//
// Requests go through node:http(s) rather than the global fetch: fetch adds
// `Sec-Fetch-Mode: cors`, `Accept-Language: *` and `User-Agent: node` to every
// request and ignores a Host header, which would make a browser navigation
// impossible to imitate (the gateway tells navigations from API calls by
// Accept and Sec-Fetch-Mode). Here exactly the given headers are sent, plus
// `Accept: */*` when none is given; `host` may be overridden.
//
// The jar is keyed by the URL's hostname only (127.0.0.1 and localhost are
// different hosts; ports are ignored, as browsers do). Cookies marked Secure
// are stored and sent over plain http too, because every test peer runs on
// loopback http. The Domain attribute is ignored: a cookie always belongs to
// the host that set it.

import http from 'node:http';
import https from 'node:https';
import zlib from 'node:zlib';

const DEFAULT_TIMEOUT_MS = 30_000;

/** Request headers of a top-level browser navigation. */
export const NAVIGATION_HEADERS = Object.freeze({
  accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
  'sec-fetch-mode': 'navigate',
  'sec-fetch-dest': 'document',
  'sec-fetch-site': 'none',
  'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) portcullis-e2e',
});

// Serialise any fetch BodyInit (string, URLSearchParams, FormData, Blob,
// bytes) with the content type fetch would give it.
async function encodeBody(body) {
  if (body === undefined || body === null) return { bytes: null, type: null };
  if (Buffer.isBuffer(body)) return { bytes: body, type: null };
  const r = new Response(body);
  return { bytes: Buffer.from(await r.arrayBuffer()), type: r.headers.get('content-type') };
}

function decodeBody(buf, encoding) {
  switch ((encoding ?? '').trim().toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return zlib.gunzipSync(buf);
    case 'deflate':
      return zlib.inflateSync(buf);
    case 'br':
      return zlib.brotliDecompressSync(buf);
    default:
      return buf;
  }
}

/**
 * Low-level HTTP exchange: exactly `headers` are sent (plus Host, Connection
 * and Content-Length). Resolves with { status, headers: Headers, body: Buffer }.
 */
export async function rawRequest(url, {
  method = 'GET', headers = new Headers(), body, signal,
} = {}) {
  const u = new URL(url);
  const { bytes, type } = await encodeBody(body);
  const out = {};
  headers.forEach((v, k) => { out[k] = v; });
  if (bytes !== null) {
    if (type && !headers.has('content-type')) out['content-type'] = type;
    out['content-length'] = String(bytes.length);
  }
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(u, {
      method, headers: out, signal, agent: false,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const h = new Headers();
        for (let i = 0; i < res.rawHeaders.length; i += 2) {
          try {
            h.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
          } catch { /* a header value Headers refuses; skip it */ }
        }
        let buf = Buffer.concat(chunks);
        try {
          buf = decodeBody(buf, res.headers['content-encoding']);
        } catch { /* leave as received */ }
        resolve({ status: res.statusCode, headers: h, body: buf });
      });
    });
    req.on('error', reject);
    req.end(bytes ?? undefined);
  });
}

function hostOf(url) {
  return new URL(url).hostname;
}

// RFC 6265 section 5.1.4 default-path.
function defaultPath(url) {
  const { pathname } = new URL(url);
  if (!pathname.startsWith('/')) return '/';
  const i = pathname.lastIndexOf('/');
  return i <= 0 ? '/' : pathname.slice(0, i);
}

// RFC 6265 section 5.1.4 path-match.
function pathMatches(requestPath, cookiePath) {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

/**
 * Parse one Set-Cookie header value.
 * @returns {{name, value, path, expires, secure, httpOnly, sameSite, domain, maxAge, raw}|null}
 */
export function parseSetCookie(header, requestUrl) {
  const parts = header.split(';');
  const first = parts.shift();
  const eq = first.indexOf('=');
  if (eq < 0) return null;
  const name = first.slice(0, eq).trim();
  const value = first.slice(eq + 1).trim();
  if (!name) return null;
  const cookie = {
    name,
    value,
    path: null,
    expires: null, // epoch ms, null = session cookie
    maxAge: undefined,
    secure: false,
    httpOnly: false,
    sameSite: undefined,
    domain: undefined,
    raw: header,
  };
  let expiresAttr;
  for (const part of parts) {
    const i = part.indexOf('=');
    const key = (i < 0 ? part : part.slice(0, i)).trim().toLowerCase();
    const val = i < 0 ? '' : part.slice(i + 1).trim();
    switch (key) {
      case 'path':
        cookie.path = val.startsWith('/') ? val : null;
        break;
      case 'max-age':
        if (/^-?\d+$/.test(val)) cookie.maxAge = Number(val);
        break;
      case 'expires': {
        const t = Date.parse(val);
        if (!Number.isNaN(t)) expiresAttr = t;
        break;
      }
      case 'secure':
        cookie.secure = true;
        break;
      case 'httponly':
        cookie.httpOnly = true;
        break;
      case 'samesite':
        cookie.sameSite = val;
        break;
      case 'domain':
        cookie.domain = val;
        break;
      default:
        break;
    }
  }
  if (cookie.path === null) cookie.path = requestUrl ? defaultPath(requestUrl) : '/';
  if (cookie.maxAge !== undefined) {
    cookie.expires = Date.now() + cookie.maxAge * 1000;
  } else if (expiresAttr !== undefined) {
    cookie.expires = expiresAttr;
  }
  return cookie;
}

function wrapResponse(res, text, url) {
  return {
    status: res.status,
    body: res.body,
    headers: res.headers,
    text,
    url,
    location: res.headers.get('location'),
    setCookies: res.headers.getSetCookie(),
    json() {
      return JSON.parse(text);
    },
  };
}

export class Client {
  /** @type {Map<string, object[]>} hostname -> cookies */
  #jar = new Map();

  /**
   * @param {{ timeoutMs?: number, headers?: Record<string,string> }} [opts]
   *   timeoutMs: per-request timeout; headers: sent on every request
   */
  constructor({ timeoutMs = DEFAULT_TIMEOUT_MS, headers = {} } = {}) {
    this.timeoutMs = timeoutMs;
    this.defaultHeaders = headers;
  }

  #live(host) {
    const now = Date.now();
    const list = (this.#jar.get(host) ?? []).filter((c) => c.expires === null || c.expires > now);
    this.#jar.set(host, list);
    return list;
  }

  /** Store the cookies from the Set-Cookie headers of a response to `url`. */
  storeSetCookies(url, setCookieHeaders) {
    const host = hostOf(url);
    for (const header of setCookieHeaders) {
      const cookie = parseSetCookie(header, url);
      if (!cookie) continue;
      const list = this.#live(host).filter((c) => !(c.name === cookie.name && c.path === cookie.path));
      if (cookie.expires === null || cookie.expires > Date.now()) list.push(cookie);
      this.#jar.set(host, list);
    }
  }

  /** Value of the Cookie header the jar would send to `url` (or '' if none). */
  cookieHeaderFor(url) {
    const u = new URL(url);
    const matching = this.#live(u.hostname)
      .filter((c) => pathMatches(u.pathname || '/', c.path))
      // Longer paths first, as user agents do.
      .sort((a, b) => b.path.length - a.path.length);
    return matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }

  /** Cookies currently stored for `host`, as an object name -> value (first by path length). */
  cookies(host) {
    const out = {};
    for (const c of [...this.#live(host)].sort((a, b) => b.path.length - a.path.length)) {
      if (!Object.hasOwn(out, c.name)) out[c.name] = c.value;
    }
    return out;
  }

  /** Full cookie records (attributes included) stored for `host`. */
  cookieRecords(host) {
    return this.#live(host).map((c) => ({ ...c }));
  }

  /** Add or replace a cookie by hand (for tampering tests). */
  setCookie(host, name, value, { path = '/', expires = null } = {}) {
    const list = this.#live(host).filter((c) => !(c.name === name && c.path === path));
    list.push({
      name, value: String(value), path, expires, secure: false, httpOnly: false, raw: null,
    });
    this.#jar.set(host, list);
  }

  /** Delete a cookie (every path when `path` is not given). */
  deleteCookie(host, name, { path } = {}) {
    this.#jar.set(host, this.#live(host).filter((c) => !(c.name === name && (path === undefined || c.path === path))));
  }

  clearCookies(host) {
    if (host === undefined) this.#jar.clear();
    else this.#jar.delete(host);
  }

  /**
   * One HTTP exchange, no redirect following. `init` takes fetch-like
   * { method, headers, body, signal } plus:
   *   cookies: false   do not send jar cookies (Set-Cookie is still stored)
   *   timeoutMs        overrides the client timeout
   * An explicit Cookie header in init.headers replaces the jar's cookies; an
   * explicit Host header is sent as given (the jar still uses the URL's host).
   * Resolves with { status, headers (Headers), text, body (Buffer), url,
   * location, setCookies, json() }.
   */
  async request(url, init = {}) {
    const {
      cookies: useJar = true, timeoutMs = this.timeoutMs, headers: initHeaders, method = 'GET', body, signal,
    } = init;
    const target = String(url);
    const headers = new Headers(this.defaultHeaders);
    new Headers(initHeaders ?? {}).forEach((v, k) => headers.set(k, v));
    if (!headers.has('accept')) headers.set('accept', '*/*');
    if (useJar && !headers.has('cookie')) {
      const cookie = this.cookieHeaderFor(target);
      if (cookie) headers.set('cookie', cookie);
    }
    const res = await rawRequest(target, {
      method: method.toUpperCase(), headers, body, signal: signal ?? AbortSignal.timeout(timeoutMs),
    });
    const text = res.body.toString('utf8');
    this.storeSetCookies(target, res.headers.getSetCookie());
    return wrapResponse(res, text, target);
  }

  get(url, { headers, ...init } = {}) {
    return this.request(url, { ...init, method: 'GET', headers });
  }

  /**
   * POST a body: URLSearchParams (form-encoded), a string (sent as-is; set
   * content-type yourself), or a plain object (sent as JSON).
   */
  post(url, body, { headers, ...init } = {}) {
    const h = new Headers(headers ?? {});
    let payload = body;
    if (body !== undefined && body !== null && typeof body === 'object'
      && !(body instanceof URLSearchParams) && !(body instanceof FormData)
      && !(body instanceof Uint8Array) && !(body instanceof ArrayBuffer) && !(body instanceof Blob)) {
      payload = JSON.stringify(body);
      if (!h.has('content-type')) h.set('content-type', 'application/json');
    }
    return this.request(url, { ...init, method: 'POST', body: payload, headers: h });
  }

  /**
   * Follow redirects like a browser: 3xx with Location, relative locations
   * resolved, 301/302/303 after a non-GET/HEAD switch to GET without a body,
   * 307/308 repeat the method and body.
   * @returns {Promise<{ final: object, chain: string[], responses: object[] }>}
   */
  async follow(url, init = {}, { maxHops = 20, stopAt } = {}) {
    let current = String(url);
    let currentInit = { ...init };
    const chain = [current];
    const responses = [];
    for (let hop = 0; ; hop += 1) {
      const res = await this.request(current, currentInit);
      responses.push(res);
      const location = res.headers.get('location');
      if (res.status < 300 || res.status > 399 || location === null) {
        return { final: res, chain, responses };
      }
      if (hop >= maxHops) {
        const err = new Error(`too many redirects (${maxHops}): ${chain.join(' -> ')}`);
        err.chain = chain;
        err.responses = responses;
        throw err;
      }
      const next = new URL(location, current).href;
      // stopAt(url) true: hand the redirect back instead of following it (a test that
      // wants to send the request itself, e.g. many times at once).
      if (stopAt?.(next)) {
        return { final: { status: 0, stoppedAt: next, url: next, headers: new Headers(), text: '' }, chain, responses };
      }
      const method = (currentInit.method ?? 'GET').toUpperCase();
      if ([301, 302, 303].includes(res.status) && method !== 'GET' && method !== 'HEAD') {
        const { body, ...restInit } = currentInit;
        const headers = new Headers(restInit.headers ?? {});
        headers.delete('content-type');
        headers.delete('content-length');
        // Browsers send Origin on the POST, not on the GET that follows it.
        headers.delete('origin');
        currentInit = { ...restInit, method: 'GET', headers };
      }
      // A Cookie header given explicitly for the first request is not carried
      // to other hosts.
      if (new URL(next).host !== new URL(current).host && currentInit.headers) {
        const headers = new Headers(currentInit.headers);
        headers.delete('cookie');
        headers.delete('authorization');
        currentInit = { ...currentInit, headers };
      }
      current = next;
      chain.push(current);
    }
  }

  /** follow() with the headers of a browser navigation (NAVIGATION_HEADERS). */
  navigate(url, init = {}, opts = {}) {
    const headers = new Headers(NAVIGATION_HEADERS);
    new Headers(init.headers ?? {}).forEach((v, k) => headers.set(k, v));
    return this.follow(url, { ...init, headers }, opts);
  }
}

// --- Minimal HTML form handling -------------------------------------------

const ENTITIES = {
  amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", '#39': "'", nbsp: '\u00a0',
};

export function decodeEntities(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, ent) => {
    if (ent[0] === '#') {
      const code = ent[1] === 'x' || ent[1] === 'X' ? parseInt(ent.slice(2), 16) : parseInt(ent.slice(1), 10);
      return Number.isFinite(code) ? String.fromCodePoint(code) : m;
    }
    return ENTITIES[ent.toLowerCase()] ?? m;
  });
}

function parseAttributes(tag) {
  const attrs = {};
  const re = /([^\s"'<>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  // Skip the element name.
  const body = tag.replace(/^<\s*[a-zA-Z0-9-]+/, '').replace(/\/?>$/, '');
  let m;
  while ((m = re.exec(body)) !== null) {
    const name = m[1].toLowerCase();
    const value = m[2] ?? m[3] ?? m[4] ?? '';
    if (!Object.hasOwn(attrs, name)) attrs[name] = decodeEntities(value);
  }
  return attrs;
}

/**
 * Extract the forms of an HTML page.
 * @returns {Array<{ id?: string, action: string, method: string,
 *   fields: Record<string,string>, inputs: Array<{name,type,value}>,
 *   buttons: Array<{name,value,text}> }>}
 * Hidden and text inputs with a name become `fields` (their value attribute,
 * '' when absent). Buttons are listed separately, including buttons outside
 * the form that refer to it with form="id".
 */
export function parseForms(html) {
  const forms = [];
  const formRe = /<form\b[^>]*>([\s\S]*?)<\/form\s*>/gi;
  let m;
  while ((m = formRe.exec(html)) !== null) {
    const openTag = m[0].match(/^<form\b[^>]*>/i)[0];
    const attrs = parseAttributes(openTag);
    const inner = m[1];
    const inputs = [];
    for (const tag of inner.match(/<input\b[^>]*>/gi) ?? []) {
      const a = parseAttributes(tag);
      if (a.name !== undefined) inputs.push({ name: a.name, type: (a.type ?? 'text').toLowerCase(), value: a.value ?? '' });
    }
    const buttons = [];
    const buttonRe = /<button\b([^>]*)>([\s\S]*?)<\/button\s*>/gi;
    let b;
    while ((b = buttonRe.exec(inner)) !== null) {
      const a = parseAttributes(`<button${b[1]}>`);
      buttons.push({ name: a.name, value: a.value ?? '', text: b[2].replace(/<[^>]*>/g, '').trim() });
    }
    forms.push({
      id: attrs.id, action: attrs.action ?? '', method: (attrs.method ?? 'get').toLowerCase(), attrs, inputs, buttons,
    });
  }
  // Buttons associated by form="id" from elsewhere in the page.
  const outsideRe = /<button\b([^>]*)>([\s\S]*?)<\/button\s*>/gi;
  let b;
  while ((b = outsideRe.exec(html)) !== null) {
    const a = parseAttributes(`<button${b[1]}>`);
    if (!a.form) continue;
    const form = forms.find((f) => f.id === a.form);
    if (form) form.buttons.push({ name: a.name, value: a.value ?? '', text: b[2].replace(/<[^>]*>/g, '').trim() });
  }
  for (const f of forms) {
    f.fields = {};
    for (const i of f.inputs) {
      if (['submit', 'button', 'image', 'reset', 'file'].includes(i.type)) continue;
      if ((i.type === 'checkbox' || i.type === 'radio')) continue;
      if (!Object.hasOwn(f.fields, i.name)) f.fields[i.name] = i.value;
    }
  }
  return forms;
}

/** Extract the href values of the <a> elements of a page (entities decoded). */
export function parseLinks(html) {
  const links = [];
  const re = /<a\b([^>]*)>([\s\S]*?)<\/a\s*>/gi;
  let m;
  while ((m = re.exec(html)) !== null) {
    const a = parseAttributes(`<a${m[1]}>`);
    if (a.href !== undefined) links.push({ href: a.href, text: m[2].replace(/<[^>]*>/g, '').trim() });
  }
  return links;
}

/**
 * Submit `form` (from parseForms) found on the page at `pageUrl`, with its own
 * fields overridden/extended by `values`, and follow the redirects, as a
 * browser navigation (a POST carries the page's Origin, as browsers send it).
 */
export async function submitForm(client, pageUrl, form, values = {}, { maxHops = 20, headers = {}, stopAt } = {}) {
  const action = new URL(form.action || pageUrl, pageUrl).href;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...form.fields, ...values })) {
    if (v !== undefined && v !== null) params.append(k, String(v));
  }
  if (form.method === 'post') {
    return client.navigate(action, {
      method: 'POST', body: params, headers: { origin: new URL(pageUrl).origin, ...headers },
    }, { maxHops, stopAt });
  }
  const u = new URL(action);
  u.search = params.toString();
  return client.navigate(u.href, { headers }, { maxHops, stopAt });
}

function isLoginForm(f) {
  return f.inputs.some((i) => i.name === 'login') && f.inputs.some((i) => i.name === 'password');
}

function isConsentForm(f) {
  return f.fields.prompt === 'consent';
}

// The auto-submitting page of response_mode=form_post (a browser submits it
// with JavaScript): a POST form made only of hidden inputs carrying the
// authorization response.
function isFormPostResponse(f) {
  return f.method === 'post' && f.inputs.length > 0
    && f.inputs.every((i) => i.type === 'hidden')
    && (Object.hasOwn(f.fields, 'code') || Object.hasOwn(f.fields, 'error'));
}

function describe(res) {
  return `${res.status} ${res.url}\n${res.text.slice(0, 500)}`;
}

/**
 * Sign in at the OpenID Provider the way a user would.
 *
 * GETs `startUrl` (any URL that ends up redirecting to the OP's authorization
 * endpoint), follows redirects to the OP's login page, submits it with
 * `login`/`password`, submits the consent page if one is shown, and follows
 * the redirects back (through the relying party's callback) until a
 * non-redirect response. A response_mode=form_post page is submitted the way
 * a browser's script would.
 *
 * Options:
 *   login, password   credentials (the test OP accepts any password)
 *   consent           true: accept the consent page; false: decline it (the
 *                     OP's "Cancel" link, which ends the flow with access_denied)
 *   cancel            true: cancel at the login page instead of signing in
 *   stopAt            (url) => boolean: stop before following a redirect to that URL
 *                     (final.status is 0 and final.stoppedAt is the URL)
 *
 * If the OP already has a session (SSO) and consent was granted before, no page
 * is shown and the flow simply completes.
 * @returns {Promise<{ final: object, chain: string[], responses: object[] }>}
 */
export async function loginViaOp(client, startUrl, {
  login = 'alice', password = 'pw', consent = true, cancel = false, maxSteps = 6, stopAt,
} = {}) {
  let { final, chain, responses } = await client.navigate(startUrl, {}, { stopAt });
  const step = async (pending) => {
    const next = await pending;
    final = next.final;
    chain = chain.concat(next.chain);
    responses = responses.concat(next.responses);
  };

  for (let i = 0; i < maxSteps; i += 1) {
    const type = final.headers.get('content-type') ?? '';
    if ((final.status !== 200 && final.status !== 400) || !type.includes('text/html')) break;
    const forms = parseForms(final.text);
    const loginForm = forms.find(isLoginForm);
    const consentForm = forms.find(isConsentForm);
    const formPost = forms.length === 1 && isFormPostResponse(forms[0]) ? forms[0] : undefined;
    if (formPost) {
      await step(submitForm(client, final.url, formPost, {}, { stopAt }));
    } else if (final.status !== 200) {
      break;
    } else if (loginForm) {
      if (cancel) {
        await step(abortInteraction(client, final));
        break;
      }
      await step(submitForm(client, final.url, loginForm, { login, password }, { stopAt }));
    } else if (consentForm) {
      if (!consent) {
        await step(abortInteraction(client, final));
        break;
      }
      await step(submitForm(client, final.url, consentForm, {}, { stopAt }));
    } else {
      break;
    }
  }
  return { final, chain, responses };
}

async function abortInteraction(client, page) {
  const link = parseLinks(page.text).find((l) => /\/abort(?:$|[?#])/.test(l.href));
  if (!link) throw new Error(`no abort link on the OP page:\n${describe(page)}`);
  return client.navigate(new URL(link.href, page.url).href);
}

/**
 * RP-initiated logout at the OP: GETs `startUrl` (the gateway's logout URL or
 * the OP's end_session URL), follows redirects, confirms the OP's "sign out?"
 * page when shown (or declines it with confirm=false), and follows redirects
 * back until a non-redirect response.
 */
export async function logoutViaOp(client, startUrl, { confirm = true } = {}) {
  let { final, chain, responses } = await client.navigate(startUrl);
  const type = final.headers.get('content-type') ?? '';
  if (final.status === 200 && type.includes('text/html')) {
    const form = parseForms(final.text).find((f) => f.buttons.some((b) => b.name === 'logout'));
    if (form) {
      const values = confirm ? { logout: form.buttons.find((b) => b.name === 'logout').value || 'yes' } : {};
      const next = await submitForm(client, final.url, form, values);
      final = next.final;
      chain = chain.concat(next.chain);
      responses = responses.concat(next.responses);
    }
  }
  return { final, chain, responses };
}
