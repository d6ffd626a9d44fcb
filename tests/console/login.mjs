// Signs in at the test OpenID provider (tests/oidc/provider.mjs, the
// development login pages of `oidc-provider`) in a Playwright page that is on
// its way there, and waits until the browser is back at the relying party.
//
// The provider's pages, as oidc-provider renders them:
//   sign-in: <form> with <input name=prompt value=login>, <input name=login>,
//            <input name=password>, <button type=submit>Sign-in</button>
//   consent: <form> with <input name=prompt value=consent>,
//            <button type=submit>Continue</button>
// Any login and password are accepted. The consent page is shown once per
// session and client; it may be skipped, and so may the sign-in page when the
// provider already has a session.

export const SIGN_IN_FORM = 'form:has(input[name=prompt][value=login])';
export const LOGIN_FIELD = `${SIGN_IN_FORM} input[name=login]`;
export const PASSWORD_FIELD = `${SIGN_IN_FORM} input[name=password]`;
export const SIGN_IN_BUTTON = `${SIGN_IN_FORM} button[type=submit]`;
export const CONSENT_FORM = 'form:has(input[name=prompt][value=consent])';
export const CONSENT_BUTTON = `${CONSENT_FORM} button[type=submit]`;

// signInAtProvider(page, login, done, timeoutMs): `page` is navigating to (or
// already on) the provider; `done` is a CSS selector present only once the
// browser is back at the relying party. Throws when the sign-in or consent
// page comes back a second time (a rejected login) or on timeout.
export async function signInAtProvider(page, login, done, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  // A check that races a navigation may fail with "execution context was
  // destroyed": count that as absent and look again.
  const present = async (selector) => {
    try {
      return (await page.locator(selector).count()) > 0;
    } catch {
      return false;
    }
  };
  let signedIn = false;
  let consented = false;
  for (;;) {
    // Whichever comes first: the relying party, the sign-in page, the consent page.
    await page
      .locator(`${done}, ${LOGIN_FIELD}, ${CONSENT_BUTTON}`)
      .first()
      .waitFor({ state: 'attached', timeout: left() });
    if (await present(done)) {
      return;
    }
    if (await present(LOGIN_FIELD)) {
      if (signedIn) {
        throw new Error(`the provider showed its sign-in page again for ${login}`);
      }
      signedIn = true;
      await page.locator(LOGIN_FIELD).fill(login, { timeout: left() });
      await page.locator(PASSWORD_FIELD).fill('any password', { timeout: left() });
      await page.locator(SIGN_IN_BUTTON).click({ timeout: left() });
      // The form posts and the browser leaves the page; wait until it has, so
      // the next round does not see this page again.
      await page.locator(SIGN_IN_FORM).waitFor({ state: 'detached', timeout: left() });
    } else if (await present(CONSENT_BUTTON)) {
      if (consented) {
        throw new Error('the provider showed its consent page again');
      }
      consented = true;
      await page.locator(CONSENT_BUTTON).click({ timeout: left() });
      await page.locator(CONSENT_FORM).waitFor({ state: 'detached', timeout: left() });
    }
    // Else the page changed between the wait and the checks: look again.
  }
}
