// Echo origin placed behind the gateway in end-to-end tests and in the demo.
//
// Every request is answered 200 with a JSON description of what arrived:
//   { method, path, query, headers, body }
// where `headers` has lower-case names and duplicate headers joined with ", ".
// Special routes:
//   GET /set-cookies   two separate Set-Cookie headers (a=1, b=2)
//   GET /redirect      302 to /elsewhere
//   GET /slow?ms=N     answers after N milliseconds
//   GET /html          small HTML page listing the X-Portcullis-* headers received
//   GET /big?mb=N      N MiB (at most 1024) of 'x', streamed in 64 KiB chunks without a
//                      content-length, written only as fast as the reader takes them
//   GET /ws            a WebSocket upgrade: an echo socket (text frames come back as
//                      "echo:TEXT"); the upgrade's headers are recorded in `upgrades`
//
// CLI: node tests/e2e/peers/origin.mjs --port 9100

import http from 'node:http';
import { pathToFileURL } from 'node:url';
import { echoUpgrade } from '../lib/websocket.mjs';

function htmlEscape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function collectHeaders(rawHeaders) {
  const headers = {};
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i].toLowerCase();
    const value = rawHeaders[i + 1];
    headers[name] = Object.hasOwn(headers, name) ? `${headers[name]}, ${value}` : value;
  }
  return headers;
}

function queryObject(searchParams) {
  const query = {};
  for (const [k, v] of searchParams) {
    if (!Object.hasOwn(query, k)) query[k] = v;
    else if (Array.isArray(query[k])) query[k].push(v);
    else query[k] = [query[k], v];
  }
  return query;
}

function htmlPage(record) {
  const rows = Object.entries(record.headers)
    .filter(([name]) => name.startsWith('x-portcullis-'))
    .map(([name, value]) => `<tr><th>${htmlEscape(name)}</th><td>${htmlEscape(value)}</td></tr>`)
    .join('\n');
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Portcullis demo origin</title>
<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}td{font-family:monospace}</style>
</head>
<body>
<h1>Hello from the origin</h1>
<p>${htmlEscape(record.method)} ${htmlEscape(record.path)}</p>
<h2>Identity headers received</h2>
${rows ? `<table>\n${rows}\n</table>` : '<p>No X-Portcullis-* headers were received.</p>'}
</body>
</html>
`;
}

/**
 * Start the echo origin on 127.0.0.1.
 * @param {{ port?: number }} [opts]
 * @returns {Promise<{ url: string, port: number, requests: object[], close(): Promise<void> }>}
 */
export async function startOrigin({ port = 0 } = {}) {
  const requests = [];
  const upgrades = [];
  const timers = new Set();
  // Bytes written by /big so far (a test compares them with what the client has read).
  const big = { written: 0 };

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://origin.invalid');
      const record = {
        method: req.method,
        path: url.pathname,
        query: queryObject(url.searchParams),
        headers: collectHeaders(req.rawHeaders),
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(record);

      const json = (status, extraHeaders = {}) => {
        const body = JSON.stringify(record);
        res.writeHead(status, {
          'content-type': 'application/json; charset=utf-8',
          'content-length': Buffer.byteLength(body),
          ...extraHeaders,
        });
        res.end(body);
      };

      if (req.method === 'GET' && url.pathname === '/set-cookies') {
        json(200, { 'set-cookie': ['a=1; Path=/', 'b=2; Path=/'] });
      } else if (req.method === 'GET' && url.pathname === '/redirect') {
        res.writeHead(302, { location: '/elsewhere', 'content-length': 0 });
        res.end();
      } else if (req.method === 'GET' && url.pathname === '/slow') {
        const ms = Math.max(0, Math.min(Number(url.searchParams.get('ms')) || 0, 600_000));
        const t = setTimeout(() => {
          timers.delete(t);
          if (!res.destroyed) json(200);
        }, ms);
        timers.add(t);
        res.on('close', () => {
          clearTimeout(t);
          timers.delete(t);
        });
      } else if (req.method === 'GET' && url.pathname === '/big') {
        const total = Math.max(0, Math.min(Number(url.searchParams.get('mb')) || 1, 1024)) * 1024 * 1024;
        const chunk = Buffer.alloc(64 * 1024, 0x78);
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        big.written = 0;
        const writeMore = () => {
          while (big.written < total) {
            big.written += chunk.length;
            if (!res.write(chunk)) {
              res.once('drain', writeMore);
              return;
            }
          }
          res.end();
        };
        res.on('error', () => {});
        writeMore();
      } else if (req.method === 'GET' && url.pathname === '/html') {
        const body = htmlPage(record);
        res.writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'content-length': Buffer.byteLength(body),
        });
        res.end(body);
      } else {
        json(200);
      }
    });
  });

  server.on('upgrade', (req, socket, head) => {
    upgrades.push({ path: req.url, headers: collectHeaders(req.rawHeaders) });
    echoUpgrade(req, socket, head);
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actualPort = server.address().port;
  let closed = false;

  return {
    url: `http://127.0.0.1:${actualPort}`,
    port: actualPort,
    requests,
    upgrades,
    big,
    async close() {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

async function main() {
  const argv = process.argv.slice(2);
  let port = 0;
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === '--port' && argv[i + 1] !== undefined) {
      port = Number(argv[i + 1]);
      i += 1;
    } else {
      console.error(`unknown argument ${argv[i]}\nusage: node origin.mjs [--port N]`);
      process.exit(2);
    }
  }
  const origin = await startOrigin({ port });
  console.log(origin.url);
  const shutdown = () => {
    origin.close().finally(() => process.exit(0));
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
