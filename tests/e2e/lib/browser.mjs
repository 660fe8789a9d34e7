// Headless Chromium for end-to-end tests, driven through playwright-core.
//
//   const browser = await launchBrowser();
//   const { context, page, consoleErrors } = await newPage(browser);
//   await page.goto(`http://localhost:${port}/`);
//   await shot(page, 'login-page');
//   await context.close();
//   await browser.close();
//
// The browser is Debian's `chromium` package (/usr/bin/chromium); playwright-core
// never downloads one. Requests to anything but loopback are aborted, so pages that
// reference web fonts or other internet resources load the same way offline.
// The gateway's `__Host-` cookies are `Secure`: Chromium accepts those on
// http://localhost (a potentially trustworthy origin), so tests address the gateway
// as localhost rather than 127.0.0.1.

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { REPO_ROOT } from './gateway.mjs';

export const CHROMIUM = process.env.PORTCULLIS_CHROMIUM ?? '/usr/bin/chromium';
export const SCREENSHOT_DIR = path.join(REPO_ROOT, 'test-artifacts', 'screenshots');

const LAUNCH_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** Launch headless Chromium. */
export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (bash scripts/setup.sh)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS, headless: true });
}

/**
 * A fresh context (no cookies, no storage) with one page.
 *
 * @param {import('playwright-core').Browser} browser
 * @param {object} [opts]
 * @param {{width:number,height:number}} [opts.viewport]
 * @returns {Promise<{ context, page, consoleErrors: string[], blocked: string[] }>}
 *   consoleErrors: console messages of type "error" and uncaught page errors, each
 *   prefixed with the URL of the page at that moment; blocked: URLs that were aborted
 *   because they leave the machine.
 */
export async function newPage(browser, { viewport = { width: 1024, height: 768 } } = {}) {
  const context = await browser.newContext({ viewport, locale: 'en-US' });
  const blocked = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    let host = '';
    try {
      host = new URL(url).hostname;
    } catch { /* not a URL with a host */ }
    // `*.localhost` is loopback too (Chromium resolves it so, and treats it as secure).
    if (url.startsWith('data:') || LOCAL_HOSTS.has(host) || host.endsWith('.localhost')) return route.continue();
    blocked.push(url);
    return route.abort('blockedbyclient');
  });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const source = msg.location()?.url ?? '';
    // Chromium reports a document answered with 4xx/5xx as a failed resource; for an
    // error page that status is the point, not a fault of the page.
    if (source === page.url() && /^Failed to load resource: the server responded with a status of \d+/.test(text)) return;
    // Requests aborted above on purpose.
    if (/net::ERR_BLOCKED_BY_CLIENT/.test(text) && (!source || blocked.includes(source))) return;
    consoleErrors.push(`${page.url()}: ${text}`);
  });
  page.on('pageerror', (err) => consoleErrors.push(`${page.url()}: ${err.message}`));
  return { context, page, consoleErrors, blocked };
}

let shotCounter = 0;

function nextShotFile(name) {
  // Screenshots of an earlier run would mix with this run's numbering.
  if (shotCounter === 0) fs.rmSync(SCREENSHOT_DIR, { recursive: true, force: true });
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  shotCounter += 1;
  const safe = name.replace(/[^A-Za-z0-9._-]+/g, '-');
  return path.join(SCREENSHOT_DIR, `${String(shotCounter).padStart(2, '0')}-${safe}.png`);
}

/**
 * Save a full-page PNG of what the page shows now into
 * test-artifacts/screenshots/ (emptied at the first screenshot of a run), named
 * `NN-name.png` in the order taken.
 * Returns the file path.
 */
export async function shot(page, name) {
  const file = nextShotFile(name);
  await page.screenshot({ path: file, fullPage: true, animations: 'disabled' });
  return file;
}

/** The text of the page's first <h1>, trimmed ('' when there is none). */
export async function headingText(page) {
  return page.evaluate(() => document.querySelector('h1')?.textContent?.trim() ?? '');
}

/** The JSON document the echo origin answered with, as rendered in the page. */
export async function echoJson(page) {
  // Chromium shows a JSON document as text in a <pre> (plus its own viewer controls).
  const text = await page.evaluate(() => (document.querySelector('body > pre') ?? document.body).textContent);
  return JSON.parse(text);
}
