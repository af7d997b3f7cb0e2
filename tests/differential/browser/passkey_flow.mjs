// A real browser for tests/differential/test_passkeys_browser.py: Debian's
// chromium (headless) driven by playwright-core, with Chromium's built-in
// WebAuthn virtual authenticator (CTAP2, internal transport, resident keys,
// user verification that always succeeds) added over CDP. It opens the page
// (passkey.html, served behind portcullis), and clicks through it:
//
//   node passkey_flow.mjs --url http://localhost:PORT/passkey.html \
//        [--steps register,login,login@http://localhost:OTHER/passkey.html] \
//        [--screenshot OUT.png] [--chromium /usr/bin/chromium] \
//        [--node-modules DIR] [--timeout-ms 30000]
//
//   env PASSKEY_TOKEN   the access token the page uses to add a passkey
//                       (kept out of argv); --token is accepted too
//
// Steps, in order, in one browser with one authenticator: "register" fills
// the token and clicks "Add a passkey" (register/begin,
// navigator.credentials.create, register/finish); "login" clears the token
// and clicks "Sign in with a passkey" (login/begin with {}, a discoverable
// navigator.credentials.get, login/finish, then /auth/me and /auth/passkeys
// with the new token). "step@URL" first opens the page at URL (another
// origin, say); a step without one runs where the page is (--url at the
// start). Prints one JSON object on stdout:
//
//   {"url", "browser", "steps": [{"step", "url", ...}, ...],
//    "credentials": [the virtual authenticator's credentials, from CDP],
//    "resultText": the result box as shown, "log": the page's request log,
//    "console": [...], "pageErrors": [...], "screenshot": path | null}
//
// where each step is what the page kept in window.passkeyResults: begin /
// finish / me / passkeys as {status, body}, the credential sent (toJSON()),
// and `error` {stage, name, message} when the browser itself refused.
// Exit status 0 once the steps ran (whatever they answered), 2 on a crash.
//
// playwright-core is found in --node-modules, else $DIFF_BROWSER_DIR/node_modules,
// else next to this file (ES modules ignore NODE_PATH).

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else out[a.slice(2)] = argv[++i];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const here = path.dirname(fileURLToPath(import.meta.url));
const url = args.url;
const token = args.token ?? process.env.PASSKEY_TOKEN ?? '';
const steps = (args.steps ?? 'register,login')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean)
  .map((s) => {
    const at = s.indexOf('@');
    return at < 0 ? { step: s, url: null } : { step: s.slice(0, at), url: s.slice(at + 1) };
  });
const screenshot = args.screenshot || null;
const chromiumPath = args.chromium || process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const timeout = Number(args['timeout-ms'] ?? 30000);

function modulesDir() {
  const candidates = [
    args['node-modules'],
    process.env.DIFF_BROWSER_DIR && path.join(process.env.DIFF_BROWSER_DIR, 'node_modules'),
    path.join(here, 'node_modules'),
  ].filter(Boolean);
  for (const d of candidates) {
    if (existsSync(path.join(d, 'playwright-core', 'package.json'))) return d;
  }
  throw new Error(`playwright-core not found in ${candidates.join(', ')}`);
}

async function main() {
  if (!url) throw new Error('--url is required');
  for (const { step } of steps) {
    if (step !== 'register' && step !== 'login') throw new Error(`unknown step ${step}`);
  }
  const req = createRequire(path.join(modulesDir(), 'noop.js'));
  // playwright-core is CommonJS: require() it from its own folder
  const { chromium } = req('playwright-core');

  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--host-resolver-rules=MAP localhost 127.0.0.1'],
    timeout,
  });
  const result = {
    url,
    browser: browser.version(),
    steps: [],
    credentials: [],
    console: [],
    pageErrors: [],
    screenshot: null,
  };
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 760 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    page.setDefaultTimeout(timeout);
    page.on('console', (m) => result.console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => result.pageErrors.push(String(e)));

    const open = async (where) => {
      const nav = await page.goto(where, { waitUntil: 'load' });
      if (!nav || nav.status() !== 200) throw new Error(`GET ${where}: ${nav ? nav.status() : 'no answer'}`);
      return nav.status();
    };
    result.pageStatus = await open(url);

    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable', { enableUI: false });
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2',
        transport: 'internal',
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });
    result.authenticatorId = authenticatorId;

    for (const { step, url: at } of steps) {
      if (at && at !== page.url()) await open(at);
      await page.evaluate((s) => { window.passkeyResults[s] = undefined; }, step);
      if (step === 'register') {
        await page.fill('#token', token);
        await page.click('#register');
      } else {
        await page.fill('#token', '');
        await page.click('#login');
      }
      await page.waitForFunction((s) => window.passkeyResults[s] && window.passkeyResults[s].done, step, { timeout });
      const out = await page.evaluate((s) => window.passkeyResults[s], step);
      result.steps.push({ step, url: page.url(), ...out });
    }

    const creds = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    // no private keys in the output
    result.credentials = creds.credentials.map(({ privateKey, ...c }) => c);
    result.resultText = await page.locator('#result').innerText();
    result.log = await page.locator('#log').innerText();
    if (screenshot) {
      await page.screenshot({ path: screenshot, fullPage: true });
      result.screenshot = screenshot;
    }
  } finally {
    await browser.close();
  }
  return result;
}

main().then(
  (r) => {
    process.stdout.write(JSON.stringify(r) + '\n');
  },
  (e) => {
    process.stderr.write(`passkey_flow: ${e && e.stack ? e.stack : e}\n`);
    process.exit(2);
  },
);
