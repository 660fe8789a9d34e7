// Real origin servers for end-to-end tests: Debian's nginx, Apache httpd with mod_php, and
// Tomcat 10. Each one runs on 127.0.0.1 on a free port, from its own configuration written
// into a temporary directory, and is stopped by its process id.
//
// Every server answers the same three things, so a test can tell which resource it served:
//   /admin, /admin/...    "ADMIN-MARKER <server>" and what the application sees of the request
//   /static/...           "STATIC-MARKER <server>" and the same dump (Apache's page decodes
//                         its path once more, and answers ADMIN-MARKER if that names /admin)
//   /static/setcookie     (nginx) also sets the gateway's session cookie and an ordinary one
//   anything else         404
// The dump lists what the application reads as headers: nginx's $http_* variables (with
// `underscores_in_headers on`, so `X_Portcullis_User` reads as $http_x_portcullis_user),
// PHP's $_SERVER HTTP_* entries, and the servlet's request headers.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../lib/gateway.mjs';

const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

/**
 * One HTTP/1.1 exchange with the request target and header names sent as given (node:http
 * sends the path byte for byte; only spaces and control characters are impossible).
 */
export function rawHttp(port, { method = 'GET', target, host = '127.0.0.1', headers = [], body } = {}) {
  return new Promise((resolve, reject) => {
    const list = [['Host', host], ['Accept', 'application/json'], ...headers];
    if (body !== undefined) list.push(['Content-Type', 'text/plain']);
    const req = http.request({
      host: '127.0.0.1', port, method, path: target, agent: false, setHost: false,
      headers: list.flat(), timeout: 30_000,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const responseHeaders = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) responseHeaders.push([res.rawHeaders[i].toLowerCase(), res.rawHeaders[i + 1]]);
        resolve({ status: res.statusCode, headers: responseHeaders, body: Buffer.concat(chunks).toString('latin1') });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`timeout on ${method} ${target}`)));
    req.on('error', reject);
    req.end(body);
  });
}

async function waitForHttp(port, child, logFile, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) {
      const log = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-2000) : '';
      throw new Error(`server exited with ${child.exitCode}\n${log}`);
    }
    try {
      const r = await rawHttp(port, { target: '/' });
      if (r.status > 0) return;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`no answer on port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function tempDir(name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `portcullis-${name}-`));
  // Apache's children run as nobody and must read the documents.
  fs.chmodSync(dir, 0o755);
  return dir;
}

async function launch(name, dir, command, args, env, port, timeoutMs) {
  if (!fs.existsSync(command)) throw new Error(`${command} is missing: run bash scripts/setup.sh`);
  const logFile = path.join(dir, 'console.log');
  const out = fs.openSync(logFile, 'a');
  const child = spawn(command, args, { cwd: dir, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  child.unref();
  running.add(child);
  try {
    await waitForHttp(port, child, logFile, timeoutMs);
  } catch (e) {
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
    running.delete(child);
    throw e;
  }
  return {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    dir,
    pid: child.pid,
    log: () => fs.readFileSync(logFile, 'utf8'),
    async stop() {
      if (!running.has(child)) return;
      running.delete(child);
      const exited = new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      try { process.kill(-child.pid, 'SIGTERM'); } catch { /* gone */ }
      const timer = setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } }, 5000);
      await exited;
      clearTimeout(timer);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const NGINX_DUMP = [
  'x-portcullis-user', 'x-portcullis-roles', 'x-portcullis-groups', 'x-portcullis-email', 'x-portcullis-name',
  'x-auth-request-user', 'x-auth-request-email', 'x-auth-request-groups',
  'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-real-ip', 'forwarded',
  'x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'proxy',
].map((h) => `${h}=$http_${h.replace(/-/g, '_')}`).join('\\n');

export async function startNginx() {
  const dir = tempDir('nginx');
  const port = await freePort();
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  underscores_in_headers on;
  default_type text/plain;
  server {
    listen 127.0.0.1:${port};
    set $dump "method=$request_method uri=$uri\\n${NGINX_DUMP}\\n";
    location = /static/setcookie {
      add_header Set-Cookie "__Host-portcullis_session=forged-by-origin; Path=/; Secure; HttpOnly" always;
      add_header Set-Cookie "app=1; Path=/" always;
      return 200 "STATIC-MARKER nginx\\n";
    }
    location /admin { return 200 "ADMIN-MARKER nginx\\n$dump"; }
    location /static/ { return 200 "STATIC-MARKER nginx\\n$dump"; }
    location / { return 404 "not found (nginx)\\n"; }
  }
}
`;
  fs.writeFileSync(path.join(dir, 'nginx.conf'), conf);
  return launch('nginx', dir, '/usr/sbin/nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')], {}, port, 20_000);
}

const PHP_DUMP = `<?php
header('Content-Type: text/plain');
echo MARKER, "\\n";
echo 'method=', $_SERVER['REQUEST_METHOD'], ' uri=', $_SERVER['REQUEST_URI'], "\\n";
foreach ($_SERVER as $k => $v) {
  if (is_string($v) && (str_starts_with($k, 'HTTP_') || in_array($k, ['REMOTE_ADDR', 'REMOTE_USER', 'PATH_INFO'], true))) {
    echo $k, '=', $v, "\\n";
  }
}
`;

export async function startApache() {
  const dir = tempDir('apache');
  const port = await freePort();
  const www = path.join(dir, 'www');
  fs.mkdirSync(www, { mode: 0o755 });
  fs.writeFileSync(path.join(www, 'admin.php'), PHP_DUMP.replace('MARKER', "'ADMIN-MARKER apache-php'"), { mode: 0o644 });
  // The static page is a front controller that decodes its path once more and resolves dot
  // segments, as some application routers do: a chain that decodes twice.
  const router = `$route = [];
foreach (explode('/', 'static' . rawurldecode($_SERVER['PATH_INFO'] ?? '')) as $seg) {
  if ($seg === '..') { array_pop($route); } elseif ($seg !== '' && $seg !== '.') { $route[] = $seg; }
}
$marker = ($route[0] ?? '') === 'admin' ? 'ADMIN-MARKER apache-php (decoded twice)' : 'STATIC-MARKER apache-php';
`;
  fs.writeFileSync(path.join(www, 'static.php'), PHP_DUMP.replace('echo MARKER', `${router}echo $marker`), { mode: 0o644 });
  const mods = '/usr/lib/apache2/modules';
  const conf = `ServerRoot ${dir}
DefaultRuntimeDir ${dir}
PidFile ${dir}/apache.pid
ErrorLog ${dir}/error.log
LogLevel warn
Listen 127.0.0.1:${port}
ServerName 127.0.0.1
User nobody
Group nogroup
LoadModule mpm_prefork_module ${mods}/mod_mpm_prefork.so
LoadModule authz_core_module ${mods}/mod_authz_core.so
LoadModule alias_module ${mods}/mod_alias.so
LoadModule php_module ${mods}/libphp8.2.so
StartServers 1
MinSpareServers 1
MaxSpareServers 2
MaxRequestWorkers 4
DocumentRoot ${www}
Alias /admin ${www}/admin.php
Alias /static ${www}/static.php
<Directory />
  Require all denied
</Directory>
<Directory ${www}>
  Require all granted
  AcceptPathInfo On
  <Files "*.php">
    SetHandler application/x-httpd-php
  </Files>
</Directory>
`;
  fs.writeFileSync(path.join(dir, 'apache2.conf'), conf, { mode: 0o644 });
  return launch('apache-php', dir, '/usr/sbin/apache2', ['-f', path.join(dir, 'apache2.conf'), '-DFOREGROUND'], {}, port, 20_000);
}

const JSP_DUMP = `<%@ page contentType="text/plain; charset=UTF-8" %>MARKER
method=<%= request.getMethod() %> uri=<%= request.getRequestURI() %> servlet=<%= request.getServletPath() %> info=<%= request.getPathInfo() %>
<% for (java.util.Enumeration<String> e = request.getHeaderNames(); e.hasMoreElements();) { String n = e.nextElement(); out.println(n + "=" + request.getHeader(n)); } %>`;

export async function startTomcat() {
  const dir = tempDir('tomcat');
  const port = await freePort();
  for (const d of ['conf', 'logs', 'temp', 'work', 'webapps/ROOT/WEB-INF']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  for (const f of ['web.xml', 'catalina.properties', 'logging.properties']) {
    fs.copyFileSync(path.join('/etc/tomcat10', f), path.join(dir, 'conf', f));
  }
  fs.writeFileSync(path.join(dir, 'conf/server.xml'), `<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector address="127.0.0.1" port="${port}" protocol="HTTP/1.1" connectionTimeout="20000" />
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false" />
    </Engine>
  </Service>
</Server>
`);
  const app = path.join(dir, 'webapps/ROOT');
  fs.writeFileSync(path.join(app, 'WEB-INF/web.xml'), `<?xml version="1.0" encoding="UTF-8"?>
<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0">
  <servlet><servlet-name>admin</servlet-name><jsp-file>/WEB-INF/admin.jsp</jsp-file></servlet>
  <servlet-mapping><servlet-name>admin</servlet-name><url-pattern>/admin/*</url-pattern></servlet-mapping>
  <servlet><servlet-name>static</servlet-name><jsp-file>/WEB-INF/static.jsp</jsp-file></servlet>
  <servlet-mapping><servlet-name>static</servlet-name><url-pattern>/static/*</url-pattern></servlet-mapping>
</web-app>
`);
  fs.writeFileSync(path.join(app, 'WEB-INF/admin.jsp'), JSP_DUMP.replace('MARKER', 'ADMIN-MARKER tomcat'));
  fs.writeFileSync(path.join(app, 'WEB-INF/static.jsp'), JSP_DUMP.replace('MARKER', 'STATIC-MARKER tomcat'));
  const env = {
    CATALINA_HOME: '/usr/share/tomcat10',
    CATALINA_BASE: dir,
    CATALINA_TMPDIR: path.join(dir, 'temp'),
    CATALINA_PID: path.join(dir, 'tomcat.pid'),
    JAVA_OPTS: '-Xmx160m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.security.egd=file:/dev/./urandom',
  };
  const server = await launch('tomcat', dir, '/usr/share/tomcat10/bin/catalina.sh', ['run'], env, port, 90_000);
  // The first request to each page compiles its JSP; do it before the timed requests.
  for (const target of ['/admin', '/static/x']) {
    const r = await rawHttp(port, { target });
    if (!r.body.includes('MARKER')) throw new Error(`tomcat did not serve ${target}: ${r.status} ${r.body.slice(0, 300)}`);
  }
  return server;
}
