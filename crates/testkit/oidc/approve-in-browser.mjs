// Plays the person at the browser for a sign-in: opens the link (a device flow's
// verification URL, or an authorization URL), confirms a device code when asked, signs in
// on the provider's development login page and consents, following redirects (also the
// last one, to `gatehouse login --browser`'s loopback port).
//
//   node approve-in-browser.mjs LINK USER_NAME
//
// Exits 0 once a page says the sign-in succeeded.

const [start, user] = process.argv.slice(2);
const origin = new URL(start).origin;
const cookies = new Map();

function remember(response) {
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const at = pair.indexOf('=');
    cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1));
  }
}

async function go(url, init = {}) {
  // Follows redirects by hand so that every cookie along the way is kept.
  for (let hops = 0; hops < 20; hops++) {
    const headers = { ...(init.headers || {}), cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') };
    const response = await fetch(new URL(url, origin), { ...init, headers, redirect: 'manual' });
    remember(response);
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      url = location;
      init = {};
      continue;
    }
    return { url, status: response.status, body: await response.text() };
  }
  throw new Error('too many redirects');
}

function firstForm(html) {
  const form = html.match(/<form[^>]*action="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i);
  if (!form) return null;
  const fields = new URLSearchParams();
  for (const input of form[2].matchAll(/<input[^>]*>/gi)) {
    const name = input[0].match(/name="([^"]*)"/i);
    if (!name) continue;
    const value = input[0].match(/value="([^"]*)"/i);
    fields.set(name[1], value ? value[1] : '');
  }
  for (const button of form[2].matchAll(/<button[^>]*name="([^"]*)"[^>]*value="([^"]*)"[^>]*>/gi)) {
    fields.set(button[1], button[2]);
  }
  return { action: form[1], fields };
}

let page = await go(start);
for (let step = 0; step < 10; step++) {
  if (/success|signed in|you can close/i.test(page.body) && !/<form/i.test(page.body)) {
    console.log('approved');
    process.exit(0);
  }
  const form = firstForm(page.body);
  if (!form) {
    console.error(`no form on ${page.url} (HTTP ${page.status}):\n${page.body.slice(0, 2000)}`);
    process.exit(1);
  }
  if (form.fields.has('login')) form.fields.set('login', user);
  if (form.fields.has('password')) form.fields.set('password', 'any');
  if (form.fields.has('confirm') && !form.fields.get('confirm')) form.fields.set('confirm', 'yes');
  page = await go(form.action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.fields.toString(),
  });
}
console.error(`did not finish; last page ${page.url}:\n${page.body.slice(0, 2000)}`);
process.exit(1);
