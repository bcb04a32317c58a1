/* The flask-push service worker, rendered from the template flask_push/sw.js.
 * To change it, copy it to flask_push/sw.js in your app's templates folder and
 * edit the copy: Flask finds the app's templates first. It shows the pushes
 * of flask-push in both their forms (README: Browser side, and its Declarative
 * Web Push), opens their url on click and reports the click, sets the app badge,
 * and subscribes again when the browser renews the subscription. */
'use strict';

// The JSON API's URL prefix (with the app's mount point), and the key the server
// had when this script was made; the live one is fetched when it is needed.
const PREFIX = {{ prefix|tojson }};
const VAPID_PUBLIC_KEY = {{ vapid_public_key|tojson }};
const SCOPE = {{ scope|tojson }};

// A new version takes over at once instead of waiting for every tab to close.
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  if (!event.data) return;
  let payload;
  try {
    payload = event.data.json();
  } catch (err) {
    payload = null;
  }
  if (payload === null || typeof payload !== 'object') payload = { title: event.data.text() };
  event.waitUntil(show(payload));
});

// The payload in one shape, from either form flask-push sends: the declarative one
// (PUSH_SITE_URL; Safari 18.4+ shows it without running this worker, other browsers
// hand it here) or the plain one (README: Browser side).
function read(payload) {
  if (payload.web_push === 8030 && payload.notification) {
    const shown = payload.notification;
    const data = shown.data || {};
    return {
      title: shown.title, body: shown.body, icon: shown.icon, image: shown.image,
      badge: shown.badge, tag: shown.tag, silent: shown.silent, renotify: shown.renotify,
      url: shown.navigate || data.url, messageId: data.messageId, clickToken: data.clickToken,
      activity: data.activity, data: data.data, appBadge: payload.app_badge,
    };
  }
  const plain = Object.assign({}, payload);
  // A number is an app badge count; for the web, a string badge is an image URL.
  if (typeof payload.badge === 'number') plain.appBadge = payload.badge;
  // A live activity, as an iOS Live Activity: its start and end alert again when they
  // replace the state shown, its updates replace it quietly.
  const event = payload.activity && payload.activity.event;
  if (event === 'update') plain.silent = true;
  else if (event) plain.renotify = true;
  return plain;
}

async function show(payload) {
  const push = read(payload);
  const newer = await newerShown(push);
  if (newer) return showAgain(newer);
  const options = {
    body: push.body || '',
    // what the click handler needs; the host's own data stays under data.data. The
    // url is not given as the `navigate` option: a browser that knows that option
    // opens it itself and fires no notificationclick, so the click would go unreported.
    data: {
      messageId: push.messageId,
      clickToken: push.clickToken,
      url: push.url,
      data: push.data,
    },
  };
  if (push.activity) options.data.activity = push.activity;
  for (const key of ['icon', 'image']) {
    if (push[key]) options[key] = appLink(String(push[key]));
  }
  if (push.tag) options.tag = String(push.tag);
  if (typeof push.badge === 'string') options.badge = appLink(push.badge);
  // The same tag replaces the notification shown; renotify without one is an error.
  if (push.silent === true) options.silent = true;
  else if (push.renotify === true && options.tag) options.renotify = true;
  return Promise.all([
    self.registration.showNotification(push.title || '', options),
    setBadge(push.appBadge),
  ]);
}

// Push services keep no order: a live activity's older state, on its way when a newer
// one went out, can arrive after it. The newer one shown, if any, stays.
async function newerShown(push) {
  const stamp = push.activity && push.activity.timestamp;
  if (typeof stamp !== 'number' || !push.tag) return null;
  const shown = await self.registration.getNotifications({ tag: String(push.tag) });
  const newer = shown.filter((note) => {
    const theirs = note.data && note.data.activity && note.data.activity.timestamp;
    return typeof theirs === 'number' && theirs > stamp;
  });
  return newer.length ? newer[0] : null;
}

// A push must show a notification (or the browser shows one of its own): the one
// shown again as it is, quietly.
function showAgain(note) {
  const options = { body: note.body, data: note.data, tag: note.tag, silent: true };
  for (const key of ['icon', 'image', 'badge']) {
    if (note[key]) options[key] = note[key];
  }
  return self.registration.showNotification(note.title, options);
}

// A link of a push (url, icon, image, badge): a path is the app's, below its root (the
// scope: /shop/ for an app mounted at /shop, where /orders/42 is /shop/orders/42),
// unless it is there already (made with the mount, as url_for does in a request).
// At the site's root, and for a full URL, it stays as it is.
function appLink(link) {
  if (typeof link !== 'string' || !link.startsWith('/') || link.startsWith('//')) return link;
  const mount = SCOPE.replace(/\/$/, '');
  if (!mount || link === mount || link.startsWith(mount + '/')) return link;
  return mount + link;
}

// The Badging API, where the browser has it (installed web apps); 0 clears the badge.
function setBadge(count) {
  if (typeof count !== 'number' || !self.navigator.setAppBadge) return Promise.resolve();
  return self.navigator.setAppBadge(count).catch(() => {}); // not allowed here: no badge
}

self.addEventListener('notificationclick', (event) => {
  const data = event.notification.data || {};
  event.notification.close();
  // a relative url ("orders/42") is below the root too
  const url = new URL(appLink(data.url) || SCOPE, new URL(SCOPE, self.location.origin)).href;
  // Both inside waitUntil: the worker may be stopped as soon as the handler returns.
  event.waitUntil(Promise.all([openOrFocus(url), reportClick(data)]));
});

async function openOrFocus(url) {
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const open = windows.find((client) => client.url === url);
  if (open) return open.focus();
  // A new tab, so that whatever the user was doing in the others is not lost;
  // only if the browser refuses one (it rejects) is an open tab of ours sent there.
  // A tab opened on another origin resolves to null: it is open, and ours stay.
  try {
    return await self.clients.openWindow(url);
  } catch (refused) {
    if (!windows.length || !windows[0].navigate) return null;
    const client = await windows[0].navigate(url);
    return client && client.focus();
  }
}

function reportClick(data) {
  if (!data.messageId || !data.clickToken) return Promise.resolve();
  return fetch(`${PREFIX}/messages/${encodeURIComponent(data.messageId)}/clicks`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ clickToken: data.clickToken }),
    credentials: 'same-origin',
  }).catch(() => {}); // a lost click report is not worth an error in the console
}

// The push service replaced or dropped the subscription: make a new one and tell
// the server, which binds it to the signed-in user the cookies name (if any).
// With the old endpoint (when the browser gives it), the server keeps its topics
// and drops it; else it is dropped when its push service answers 410.
self.addEventListener('pushsubscriptionchange', (event) => {
  event.waitUntil(resubscribe(event));
});

async function resubscribe(event) {
  let subscription = event.newSubscription;
  if (!subscription) {
    const key = await fetch(`${PREFIX}/vapid-public-key`, { credentials: 'same-origin' })
      .then((response) => response.json())
      .then((body) => body.publicKey)
      .catch(() => VAPID_PUBLIC_KEY);
    if (!key) return;
    subscription = await self.registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: fromBase64Url(key),
    });
  }
  // the old endpoint, so that the server keeps the renewed one's topics and forgets
  // the old one (which its push service no longer serves)
  const old = event.oldSubscription && event.oldSubscription.endpoint;
  await fetch(`${PREFIX}/subscriptions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(old ? { ...subscription.toJSON(), oldEndpoint: old } : subscription.toJSON()),
    credentials: 'same-origin',
  });
}

function fromBase64Url(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}
