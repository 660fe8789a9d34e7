// A minimal WebSocket (RFC 6455) for tests, without packages: the server side of an echo
// origin (node's http 'upgrade' event, Sec-WebSocket-Accept from the key) and a client that
// sends the upgrade with any headers (cookies, Authorization) and exchanges text frames.
import crypto from 'node:crypto';
import http from 'node:http';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export function acceptKey(key) {
  return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

/** One frame: FIN set, the opcode, masked when `mask` (clients must mask). */
export function encodeFrame(opcode, payload, mask) {
  const data = Buffer.from(payload);
  const len = data.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, (mask ? 0x80 : 0) | len])
    : Buffer.from([0x80 | opcode, (mask ? 0x80 : 0) | 126, len >> 8, len & 0xff]);
  if (len > 0xffff) throw new Error('test frames stay below 64 KiB');
  if (!mask) return Buffer.concat([head, data]);
  const key = crypto.randomBytes(4);
  const masked = Buffer.from(data.map((b, i) => b ^ key[i % 4]));
  return Buffer.concat([head, key, masked]);
}

/** Splits complete frames off `buf`; returns [frames, rest]. */
export function decodeFrames(buf) {
  const frames = [];
  let off = 0;
  while (buf.length - off >= 2) {
    const opcode = buf[off] & 0x0f;
    const masked = (buf[off + 1] & 0x80) !== 0;
    let len = buf[off + 1] & 0x7f;
    let p = off + 2;
    if (len === 126) {
      if (buf.length - p < 2) break;
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      if (buf.length - p < 8) break;
      len = Number(buf.readBigUInt64BE(p));
      p += 8;
    }
    const key = masked ? buf.subarray(p, p + 4) : null;
    if (masked) p += 4;
    if (buf.length - p < len) break;
    let payload = buf.subarray(p, p + len);
    if (key) payload = Buffer.from(payload.map((b, i) => b ^ key[i % 4]));
    frames.push({ opcode, payload });
    off = p + len;
  }
  return [frames, buf.subarray(off)];
}

/**
 * Answers an http 'upgrade' event as an echo WebSocket: every text frame comes back
 * prefixed with "echo:", a close is answered with a close.
 */
export function echoUpgrade(req, socket, head) {
  const key = req.headers['sec-websocket-key'];
  if (!key || (req.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
    socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${acceptKey(key)}\r\n\r\n`);
  let buf = Buffer.from(head ?? []);
  socket.on('data', (d) => {
    let frames;
    [frames, buf] = decodeFrames(Buffer.concat([buf, d]));
    for (const f of frames) {
      if (f.opcode === 1) socket.write(encodeFrame(1, `echo:${f.payload.toString('utf8')}`, false));
      else if (f.opcode === 9) socket.write(encodeFrame(10, f.payload, false));
      else if (f.opcode === 8) socket.end(encodeFrame(8, f.payload, false));
    }
  });
  socket.on('error', () => {});
}

/**
 * Opens a WebSocket to `url` (http://) with extra request headers. Resolves with
 * { status, headers, body } when the server does not switch protocols, or with
 * { status: 101, headers, send(text), receive(), close() }.
 */
export function connect(url, headers = {}) {
  const key = crypto.randomBytes(16).toString('base64');
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      headers: {
        connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': key, ...headers,
      },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('upgrade', (res, socket, head) => {
      if (res.headers['sec-websocket-accept'] !== acceptKey(key)) {
        socket.destroy();
        reject(new Error('wrong Sec-WebSocket-Accept'));
        return;
      }
      let buf = Buffer.from(head ?? []);
      const queue = [];
      const waiting = [];
      let ended = false;
      const deliver = () => {
        while (queue.length && waiting.length) waiting.shift().resolve(queue.shift());
        if (ended) while (waiting.length) waiting.shift().resolve(null);
      };
      socket.on('data', (d) => {
        let frames;
        [frames, buf] = decodeFrames(Buffer.concat([buf, d]));
        for (const f of frames) queue.push(f);
        deliver();
      });
      socket.on('close', () => { ended = true; deliver(); });
      socket.on('error', () => { ended = true; deliver(); });
      resolve({
        status: 101,
        headers: res.headers,
        send: (text) => socket.write(encodeFrame(1, text, true)),
        /** The next frame ({ opcode, payload }), or null once the connection is gone. */
        receive: () => new Promise((res2) => { waiting.push({ resolve: res2 }); deliver(); }),
        close: () => { socket.end(encodeFrame(8, Buffer.alloc(0), true)); },
        destroy: () => socket.destroy(),
      });
    });
    req.end();
  });
}
