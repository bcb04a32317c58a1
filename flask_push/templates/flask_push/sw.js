/* The flask-push service worker, rendered from the template flask_push/sw.js.
 * To change it, copy it to flask_push/sw.js in your app's templates folder and
 * edit the copy: Flask finds the app's templates first. It shows the pushes
 * of flask-push (CONTRACT.md section 4), opens their url on click and reports
 * the click, and subscribes again when the browser renews the subscription. */
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
    payload = { title: event.data.text() };
  }
  event.waitUntil(show(payload));
});

function show(payload) {
  const options = {
    body: payload.body || '',
    // what the click handler needs; the host's own data stays under data.data
    data: {
      messageId: payload.messageId,
      clickToken: payload.clickToken,
      url: payload.url,
      data: payload.data,
    },
  };
  for (const key of ['icon', 'image', 'tag']) {
    if (payload[key]) options[key] = String(payload[key]);
  }
  // For the web, a badge is an image URL; a number is an app-icon count (iOS).
  if (typeof payload.badge === 'string') options.badge = payload.badge;
  return self.registration.showNotification(payload.title || '', options);
}

self.addEventListener('notificationclick', (event) => {
  const data = event.notification.data || {};
  event.notification.close();
  const url = new URL(data.url || SCOPE, self.location.origin).href;
  // Both inside waitUntil: the worker may be stopped as soon as the handler returns.
  event.waitUntil(Promise.all([openOrFocus(url), reportClick(data)]));
});

async function openOrFocus(url) {
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const open = windows.find((client) => client.url === url);
  if (open) return open.focus();
  // A new tab, so that whatever the user was doing in the others is not lost;
  // only if the browser refuses one is an open tab of ours sent there.
  const opened = await self.clients.openWindow(url).catch(() => null);
  if (opened || !windows.length || !windows[0].navigate) return opened;
  const client = await windows[0].navigate(url);
  return client && client.focus();
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
// The old endpoint is dropped by the server when its push service answers 410.
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
  await fetch(`${PREFIX}/subscriptions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(subscription.toJSON()),
    credentials: 'same-origin',
  });
}

function fromBase64Url(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}
