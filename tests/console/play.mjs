// Plays a recorded SSH terminal in Portcullis' web console as a person would,
// in a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser is downloaded).
//
//   node tests/console/play.mjs CONSOLE_URL LOGIN SESSION_ID TEXT
//
// 1. Opens CONSOLE_URL/sessions/SESSION_ID; the console sends the browser to
//    sign in at the OpenID provider (tests/oidc/provider.mjs) as LOGIN, and
//    back to the session's page (`#player`).
// 2. Waits for the asciinema player's terminal (`.ap-term`) to show TEXT:
//    the recording was fetched (`/sessions/ID/cast`), parsed and played.
// 3. Fails on any Content-Security-Policy violation or script error.
// Prints `played` and exits 0; any failure, or 90 s in all, prints the error,
// the page's URL and the start of its text on stderr and exits 1.

import { start } from './browser.mjs';
import { signInAtProvider } from './login.mjs';

const TOTAL_MS = 90_000;
const STEP_MS = 30_000;

const [consoleArg, login, session, text] = process.argv.slice(2);
if (!consoleArg || !login || !session || !text) {
  console.error('usage: node play.mjs CONSOLE_URL LOGIN SESSION_ID TEXT');
  process.exit(2);
}
const base = consoleArg.replace(/\/+$/, '');

const run = start('play.mjs', TOTAL_MS);
const problems = [];

async function main() {
  const page = await run.open(STEP_MS);
  // The console's own pages must run under their policy without a violation.
  page.on('console', (message) => {
    if (message.type() === 'error' && page.url().startsWith(base)) problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(String(error)));

  await page.goto(`${base}/sessions/${encodeURIComponent(session)}`);
  await signInAtProvider(page, login, '#player', STEP_MS);
  await page.locator('#player').waitFor({ state: 'attached' });

  const terminal = page.locator('.ap-term', { hasText: text });
  await terminal.first().waitFor({ state: 'attached' });
  if (problems.length > 0) {
    throw new Error(`errors on the page: ${problems.join(' | ')}`);
  }
  console.log('played');
  await run.finish();
}

main().catch(run.fail);
