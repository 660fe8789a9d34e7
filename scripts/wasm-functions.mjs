// The functions of a wasm module by size, from its code and name sections: the largest ones
// (optionally those whose name contains a string), and the code by crate or part. Needs a
// build with the names section. Not part of `make test`.
//
//   PORTCULLIS_WASM_NAMES=1 bash scripts/build.sh -d build-names
//   node scripts/wasm-functions.mjs build-names/index_bg.wasm [NAME_PART] [COUNT]
//
// Sizes are the bytes of each function body. The engine compiles a function whole when it
// first runs, so a large function on a first request's path costs that request.
import fs from 'node:fs';

const [file, part = '', count = '30'] = process.argv.slice(2);
if (!file) {
  console.error('usage: node scripts/wasm-functions.mjs FILE.wasm [NAME_PART] [COUNT]');
  process.exit(2);
}
const buf = fs.readFileSync(file);
let p = 8;
const leb = () => {
  let r = 0;
  let shift = 0;
  let b;
  do {
    b = buf[p++];
    r += (b & 0x7f) * 2 ** shift;
    shift += 7;
  } while (b & 0x80);
  return r;
};
let imported = 0;
const bodies = [];
const names = new Map();
while (p < buf.length) {
  const id = buf[p++];
  const size = leb();
  const end = p + size;
  if (id === 2) {
    // Imports: only imported functions take function indices before the module's own.
    for (let n = leb(), i = 0; i < n; i++) {
      const moduleLen = leb();
      p += moduleLen;
      const nameLen = leb();
      p += nameLen;
      const kind = buf[p++];
      if (kind === 0) { leb(); imported++; }
      else if (kind === 1) { p++; if (leb() & 1) leb(); leb(); }
      else if (kind === 2) { if (leb() & 1) { leb(); } leb(); }
      else if (kind === 3) { p += 2; }
      else if (kind === 4) { p++; leb(); }
    }
  } else if (id === 10) {
    for (let n = leb(), i = 0; i < n; i++) {
      const s = leb();
      bodies.push(s);
      p += s;
    }
  } else if (id === 0) {
    const nameLen = leb();
    const section = buf.subarray(p, p + nameLen).toString();
    p += nameLen;
    if (section === 'name') {
      while (p < end) {
        const sub = buf[p++];
        const subSize = leb();
        const subEnd = p + subSize;
        if (sub === 1) {
          for (let n = leb(), i = 0; i < n; i++) {
            const index = leb();
            const l = leb();
            names.set(index, buf.subarray(p, p + l).toString());
            p += l;
          }
        }
        p = subEnd;
      }
    }
  }
  p = end;
}
if (names.size === 0) console.error(`${file}: no names section (build with PORTCULLIS_WASM_NAMES=1)`);
const rows = bodies.map((s, i) => [s, names.get(i + imported) ?? `#${i + imported}`]).sort((a, b) => b[0] - a[0]);
const total = bodies.reduce((a, b) => a + b, 0);
console.log(`${bodies.length} functions, ${total} bytes of code`);
for (const [s, n] of rows.filter(([, n]) => n.includes(part)).slice(0, Number(count))) {
  console.log(`${String(s).padStart(8)}  ${n.slice(0, 160)}`);
}
const parts = [
  ['serde deserialisation (serde_json and serde, every type)', /serde_json::de|serde_core::de|serde::de|serde::private::de/],
  ['serde serialisation', /ser::|Serialize/],
  ['the gateway (src/gateway)', /portcullis::gateway/],
  ['SAML (src/saml)', /portcullis::saml/],
  ['OIDC (src/oidc)', /portcullis::oidc/],
  ['configuration (src/config)', /portcullis::config/],
  ['DER, PKCS, X.509', /der::|pkcs8|pkcs1|x509|spki|const_oid/],
  ['RSA, P-256, Ed25519, SHA-2, big integers', /rsa::|p256|ecdsa|elliptic_curve|ed25519|sha2::|num_bigint|crypto_bigint|primeorder|hmac/],
  ['worker, wasm-bindgen, js-sys, web-sys', /worker::|wasm_bindgen|js_sys|web_sys|wasm_streams/],
  ['formatting', /fmt::|Display|Debug/],
  ['url, idna', /^url::|idna::|<url::/],
];
const byPart = new Map();
for (const [s, n] of rows) {
  const found = parts.find(([, re]) => re.test(n));
  const key = found ? found[0] : 'the rest';
  byPart.set(key, (byPart.get(key) ?? 0) + s);
}
console.log('\nby part (first matching name wins):');
for (const [k, v] of [...byPart.entries()].sort((a, b) => b[1] - a[1])) console.log(`${String(v).padStart(9)}  ${k}`);
