// What the console scripts share: a headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core; no browser is downloaded)
// whose pages reach loopback addresses only, and how a script ends.
//
//   const run = start('approve.mjs', 90_000);   // fails after 90 s in all
//   const page = await run.open(30_000);        // each step: 30 s at most
//   ...
//   await run.finish();                          // exit 0
//   main().catch(run.fail);                      // exit 1, saying why
//
// A failure prints the error, the page's URL and the start of its text on
// stderr, closes the browser and exits 1.

import { chromium } from 'playwright-core';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// Only loopback addresses: the provider's development pages link a web font
// from the internet, and a test sends nothing off the machine.
function loopback(url) {
  return ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}

export function start(name, totalMs) {
  let browser;
  let page;
  let failing = false;

  async function close() {
    if (!browser) return;
    await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 5_000))]);
  }

  async function fail(error) {
    if (failing) return;
    failing = true;
    let url = '(no page)';
    let text = '';
    if (page) {
      try {
        url = page.url();
        text = (await page.locator('body').innerText({ timeout: 2_000 })).slice(0, 2000);
      } catch (e) {
        text = `(page text unavailable: ${e.message.split('\n')[0]})`;
      }
    }
    console.error(`${name} failed: ${error?.stack ?? error}`);
    console.error(`page URL: ${url}`);
    console.error(`page text:\n${text}`);
    await close();
    process.exit(1);
  }

  const overall = setTimeout(() => fail(new Error(`timed out after ${totalMs / 1000} s`)), totalMs);

  return {
    fail,
    async open(stepMs) {
      browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
      const context = await browser.newContext();
      await context.route((url) => !loopback(url), (route) => route.abort('blockedbyclient'));
      page = await context.newPage();
      page.setDefaultTimeout(stepMs);
      return page;
    },
    async finish() {
      clearTimeout(overall);
      await close();
      process.exit(0);
    },
  };
}
