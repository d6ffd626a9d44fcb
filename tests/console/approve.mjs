// Decides an access request in Portcullis' web console as a person would, in
// a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser is downloaded).
//
//   node tests/console/approve.mjs CONSOLE_URL LOGIN approve|deny COMMENT
//
// 1. Opens CONSOLE_URL/ (the inbox); the console sends the browser to sign in
//    at the OpenID provider (tests/oidc/provider.mjs), where it signs in as
//    LOGIN (any password) and consents, and comes back to the inbox.
// 2. Prints `ready` once the inbox (`#inbox`) is shown, signed in.
// 3. Waits, up to 60 s and without reloading, for a request to appear in the
//    inbox (`a.request[data-id]`, pushed by server-sent events); opens the first.
//    Checks that the statement (`#statement`, when there is one) is drawn in
//    stored order (`unicode-bidi: bidi-override`, `direction: ltr`) and that
//    the page is no wider than the window.
// 4. Fills `textarea[name=comment]` with COMMENT and clicks
//    `button[name=decision][value=DECISION]`.
// 5. Waits for `#status` to say `approved` (or `denied`), prints
//    `decided ID STATUS` and exits 0.
// Any failure, or 90 s in all, prints the error, the page's URL and the start
// of its text on stderr and exits 1.

import { start } from './browser.mjs';
import { signInAtProvider } from './login.mjs';

const TOTAL_MS = 90_000;
const REQUEST_WAIT_MS = 60_000;
const STEP_MS = 30_000;

const [consoleArg, login, decision, comment] = process.argv.slice(2);
if (!consoleArg || !login || !['approve', 'deny'].includes(decision) || comment === undefined) {
  console.error('usage: node approve.mjs CONSOLE_URL LOGIN approve|deny COMMENT');
  process.exit(2);
}
const base = consoleArg.replace(/\/+$/, '');
const expected = decision === 'approve' ? 'approved' : 'denied';

const run = start('approve.mjs', TOTAL_MS);

async function main() {
  const page = await run.open(STEP_MS);

  // 1. Sign in: the inbox → CONSOLE_URL/login → the provider → back to the inbox.
  await page.goto(`${base}/`);
  await signInAtProvider(page, login, '#inbox', STEP_MS);

  // 2. Signed in, on the inbox.
  await page.locator('#inbox').waitFor({ state: 'attached' });
  console.log('ready');

  // 3. A request arrives live; no reload.
  const first = page.locator('a.request').first();
  await first.waitFor({ state: 'visible', timeout: REQUEST_WAIT_MS });
  const id = await first.getAttribute('data-id');
  if (!id) {
    throw new Error('the first a.request has no data-id');
  }
  // By its id: the live inbox may redraw its list meanwhile.
  await page.locator(`a.request[data-id=${JSON.stringify(id)}]`).first().click();

  // What the requester wrote is drawn in the order it is stored (right-to-left
  // letters do not turn the text around them) and within the page's width.
  await page.locator('textarea[name=comment]').waitFor({ state: 'attached' });
  const drawn = await page.evaluate(() => {
    const statement = document.querySelector('#statement');
    const style = statement && getComputedStyle(statement);
    const root = document.documentElement;
    return {
      statement: Boolean(statement),
      bidi: style && style.unicodeBidi,
      direction: style && style.direction,
      overflow: root.scrollWidth - root.clientWidth,
    };
  });
  if (drawn.statement && (drawn.bidi !== 'bidi-override' || drawn.direction !== 'ltr')) {
    throw new Error(`#statement is drawn with unicode-bidi ${drawn.bidi}, direction ${drawn.direction}`);
  }
  if (drawn.overflow > 0) {
    throw new Error(`the request page is ${drawn.overflow}px wider than the window`);
  }

  // 4. Decide.
  const commentField = page.locator('textarea[name=comment]');
  await commentField.fill(comment);
  await page.locator(`button[name=decision][value=${decision}]`).click();

  // 5. The outcome.
  const status = page.locator('#status', { hasText: /\b(approved|denied)\b/i });
  await status.waitFor({ state: 'attached' });
  const shown = (await status.innerText()).trim();
  const word = /\bapproved\b/i.test(shown) ? 'approved' : 'denied';
  if (word !== expected) {
    throw new Error(`#status says "${shown}", expected ${expected}`);
  }
  console.log(`decided ${id} ${word}`);
  await run.finish();
}

main().catch(run.fail);
