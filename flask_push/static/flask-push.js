/* flask-push browser client: Web Push subscription, live events, the inbox and a bell.
 *
 * A plain script, no build step: <script src="/push/static/flask-push.js"></script>
 * defines window.FlaskPush. As an ES module, import flask-push.mjs (next to this file),
 * which loads this script and exports the same functions. Loaded twice, it keeps the
 * first instance, so both ways share one configuration and one websocket.
 */
(function (root) {
  'use strict';
  if (root.FlaskPush) return;

  const config = {
    prefix: '/push',
    serviceWorkerUrl: '/push-sw.js',
    scope: undefined,
    // the bell's stylesheet; undefined: <prefix>/static/flask-push.css, false: none
    // (the page brings the fp-* styles itself)
    stylesheet: undefined,
  };
  // the keys of config the page set itself; the app says the others (whereTheAppIs)
  const given = new Set();
  let site = null;

  // The script is served at <prefix>/static/flask-push.js: that says the prefix, so a
  // custom PUSH_URL_PREFIX, or an app mounted below the root, needs no configure().
  servedFrom(document.currentScript && document.currentScript.src, 'flask-push.js');

  /** Take the prefix from `url`, the address `file` was loaded from, unless the page
   *  set one (or the file was copied elsewhere). */
  function servedFrom(url, file) {
    if (!url || config.prefix !== '/push') return;
    const src = new URL(url, location.href);
    const path = src.pathname;
    const suffix = '/static/' + file;
    // a copy in the app's own /static/ says nothing: the prefix is never the root
    if (path.endsWith(suffix) && path.length > suffix.length) {
      config.prefix = path.slice(0, -suffix.length);
      if (src.origin !== location.origin) otherOrigin(src.origin, file);
    }
  }

  /** Loaded from another origin than the page's: the API, the websocket and the
   *  service worker are asked on the page's own origin, so they would answer 404. */
  function otherOrigin(origin, file) {
    console.warn(
      `flask-push: ${file} was loaded from ${origin}, but this page is at ` +
        `${location.origin}, where the client calls the API (${config.prefix}), the ` +
        `websocket and the service worker: they will not reach the app at ${origin}. ` +
        `Serve this page from ${origin}, or pass ${config.prefix} and the service ` +
        'worker through to it from this origin.'
    );
  }

  /** Set {prefix, serviceWorkerUrl, scope, stylesheet}: where the app serves flask-push. */
  function configure(options) {
    Object.assign(config, options || {});
    for (const key of Object.keys(options || {})) given.add(key);
    if (options) site = null; // asked again, of the prefix set now
    return Object.assign({}, config);
  }

  /** Where the app serves its service worker, and its root, as the app says
   *  (GET <prefix>/client-config), unless the page set them: an app mounted below the
   *  site's root (at /shop) serves the worker at /shop/push-sw.js with the scope /shop/,
   *  and a notification's /orders/42 is its /shop/orders/42. Asked once, if it answers. */
  function whereTheAppIs() {
    if (!site) {
      const asked = api('GET', '/client-config').catch(() => {
        // unanswered: the defaults this time (which say what failed, if they fail too),
        // and the app asked again next time
        if (site === pending) site = null;
        return {};
      });
      const pending = asked.then((answer) => ({
        root: answer.root || '/',
        serviceWorkerUrl: given.has('serviceWorkerUrl')
          ? config.serviceWorkerUrl
          : answer.serviceWorkerUrl || config.serviceWorkerUrl,
        scope: given.has('scope') ? config.scope : answer.scope || config.scope,
      }));
      site = pending;
    }
    return site;
  }

  /** A link of a notification (`url`) as a page address: a path is the app's, below
   *  its root, unless it is there already (made with the mount, by url_for). As the
   *  service worker reads it. */
  function appLink(link, root) {
    if (typeof link !== 'string' || !link.startsWith('/') || link.startsWith('//')) return link;
    const mount = root.replace(/\/$/, '');
    if (!mount || link === mount || link.startsWith(mount + '/')) return link;
    return mount + link;
  }

  /** A JSON API call under the prefix; rejects with err.status and err.code. */
  async function api(method, path, body) {
    const init = { method, credentials: 'same-origin', headers: {} };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(config.prefix + path, init);
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw Object.assign(new Error(error.message || response.statusText), {
        status: response.status,
        code: error.code,
        field: error.field,
      });
    }
    return data;
  }

  // -- Web Push ------------------------------------------------------------------

  // The server's id of this browser's subscription, for unsubscribe().
  const STORED_ID = 'flask-push:subscription-id';

  function pushSupported() {
    return 'serviceWorker' in navigator && 'PushManager' in root && 'Notification' in root;
  }

  function fromBase64Url(text) {
    const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
    const raw = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }

  function sameBytes(a, b) {
    const x = new Uint8Array(a);
    return x.length === b.length && x.every((byte, i) => byte === b[i]);
  }

  // PushManager.subscribe() needs an active worker, not only a registration.
  async function activeRegistration() {
    const { serviceWorkerUrl, scope } = await whereTheAppIs();
    const options = scope ? { scope } : undefined;
    let registration;
    try {
      registration = await navigator.serviceWorker.register(serviceWorkerUrl, options);
    } catch (err) {
      // a 404 reads "A bad HTTP response code (404) was received when fetching the script"
      throw Object.assign(
        new Error(
          `The service worker ${serviceWorkerUrl} could not be registered (${err.message}). ` +
            'If it is served elsewhere than the app says (a proxy that does not pass it on, ' +
            'say), call FlaskPush.configure({serviceWorkerUrl, scope}).'
        ),
        { code: 'service_worker_failed', cause: err }
      );
    }
    const worker = registration.installing || registration.waiting;
    if (!registration.active && worker) {
      await new Promise((resolve, reject) => {
        worker.addEventListener('statechange', () => {
          if (worker.state === 'activated') resolve();
          if (worker.state === 'redundant') reject(new Error('The service worker failed to install.'));
        });
      });
    }
    return registration;
  }

  async function ourRegistration() {
    const script = new URL((await whereTheAppIs()).serviceWorkerUrl, location.href).href;
    const registrations = await navigator.serviceWorker.getRegistrations();
    return registrations.find((r) => {
      const worker = r.active || r.waiting || r.installing;
      return worker && worker.scriptURL === script;
    });
  }

  /** Chromium's refusal of a subscription in a private window: an AbortError whose
   *  message says "permission denied" (other AbortErrors, such as "push service
   *  error", are failures to reach the push service, not a refusal). */
  function refusedAsAborted(err) {
    return err.name === 'AbortError' && /permission denied/i.test(err.message || '');
  }

  /** Ask for permission, subscribe this browser and register it with the server.
   *  options.topics: topics to subscribe to. Resolves to the server's subscription. */
  async function subscribe(options) {
    if (!pushSupported()) {
      throw Object.assign(new Error('This browser cannot receive push notifications.'), {
        code: 'unsupported',
      });
    }
    const permission = await Notification.requestPermission();
    if (permission !== 'granted') {
      throw Object.assign(new Error('Notifications are not allowed in this browser.'), {
        code: 'permission_denied',
      });
    }
    const registration = await activeRegistration();
    const key = fromBase64Url((await api('GET', '/vapid-public-key')).publicKey);
    let subscription = await registration.pushManager.getSubscription();
    // the endpoint a new subscription replaces: the server carries its topics over
    let replaced = null;
    // Made with another key (the server's key was rotated): it cannot receive our pushes.
    if (subscription && !sameBytes(subscription.options.applicationServerKey, key)) {
      replaced = subscription.endpoint;
      await subscription.unsubscribe();
      subscription = null;
    }
    const fresh = () =>
      registration.pushManager
        .subscribe({ userVisibleOnly: true, applicationServerKey: key })
        .catch((err) => {
          // notifications are allowed, yet the browser refuses a subscription: it has
          // no push here (Chrome's private windows say "permission denied", as an
          // AbortError in Chromium 156)
          if (err && (err.name === 'NotAllowedError' || refusedAsAborted(err))) {
            throw Object.assign(
              new Error(
                'This browser refused a push subscription although notifications are ' +
                  `allowed (a private window has no push): ${err.message}`
              ),
              { code: 'unsupported', cause: err }
            );
          }
          throw err;
        });
    if (!subscription) subscription = await fresh();
    const register = (sub) => {
      const body = sub.toJSON();
      if (options && options.topics) body.topics = options.topics;
      if (replaced && replaced !== body.endpoint) body.oldEndpoint = replaced;
      return api('POST', '/subscriptions', body);
    };
    let saved;
    try {
      saved = await register(subscription);
    } catch (err) {
      // Its push service said this endpoint is gone; it never works again: get a new one.
      if (err.code !== 'subscription_gone') throw err;
      replaced = subscription.endpoint;
      await subscription.unsubscribe();
      saved = await register(await fresh());
    }
    localStorage.setItem(STORED_ID, saved.id);
    return saved;
  }

  /** Forget this browser's subscription, on the server and in the browser. */
  async function unsubscribe() {
    const registration = pushSupported() && (await ourRegistration());
    const subscription = registration && (await registration.pushManager.getSubscription());
    const remove = (id) =>
      api('DELETE', '/subscriptions/' + encodeURIComponent(id)).then(
        () => true,
        (err) => {
          if (err.status !== 404) throw err;
          return false; // already gone
        }
      );
    const id = localStorage.getItem(STORED_ID);
    if (id) {
      // Not found: the service worker renewed the subscription since (its
      // pushsubscriptionchange, which cannot reach localStorage), and the server knows
      // this browser under the renewed one's id. Posting it again names that id.
      if (!(await remove(id)) && subscription) {
        await remove((await api('POST', '/subscriptions', subscription.toJSON())).id);
      }
      localStorage.removeItem(STORED_ID);
    }
    if (subscription) await subscription.unsubscribe();
  }

  // -- live events (README: Live events) ------------------------------------------

  // milliseconds a socket stays open before its backoff starts again from 0.5 s
  const STEADY_AFTER = 10000;

  const live = {
    ws: null,
    wanted: false, // connect() was called and disconnect() was not
    attempts: 0, // attempts since a socket last stayed open, for the backoff
    opened: false, // a socket has opened before: the next open is a reconnect
    // the user's own channel, as the server named it: its events are the inbox (a
    // page may follow other users' channels too, a staff page say)
    own: null,
    steady: null, // the timer after which an open socket counts as lasting
    timer: null,
    pinger: null,
    // each ping() sends an id and waits for the pong that gives it back (a heartbeat's
    // pong has none)
    pings: 0,
    awaitingPong: new Map(), // id -> {resolve, reject}
    lastIds: new Map(), // channel -> last event id seen (undefined: none yet)
    afterGap: new Set(), // channels whose next event is new whatever its id
    // channels joined again after a reconnect with no event seen yet: whatever was
    // published while the socket was down cannot be asked for, so once subscribed
    // they get a `gap` (reload the state), as a channel whose events were lost does
    unsure: new Set(),
    handlers: new Map(), // channel -> Map(event -> Set(handler)); '*' matches any
  };

  function sendFrame(frame) {
    if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(frame));
  }

  function join(channel) {
    const since = live.lastIds.get(channel);
    sendFrame(since === undefined ? { op: 'subscribe', channel } : { op: 'subscribe', channel, since });
  }

  function emit(channel, event, data, frame) {
    for (const ch of new Set([channel, '*'])) {
      const byEvent = live.handlers.get(ch);
      if (!byEvent) continue;
      for (const ev of new Set([event, '*'])) {
        for (const handler of byEvent.get(ev) || []) {
          try {
            handler(data, frame);
          } catch (err) {
            console.error('flask-push: a handler failed', err);
          }
        }
      }
    }
  }

  function receive(frame) {
    if (frame.op === 'event') {
      const last = live.lastIds.get(frame.channel);
      // After a gap the channel may be numbered anew, below the ids we saw (a server
      // whose clock is behind the last one's), so its next event counts whatever its id.
      const afterGap = live.afterGap.delete(frame.channel);
      if (last !== undefined && frame.id <= last && !afterGap) return; // replayed twice: seen already
      live.lastIds.set(frame.channel, frame.id);
      emit(frame.channel, frame.event, frame.data, frame);
      // The server joins the user's own channel by itself: its events are the inbox.
      if (frame.channel === live.own) {
        document.dispatchEvent(
          new CustomEvent('new-notification-event', {
            detail: { channel: frame.channel, event: frame.event, data: frame.data, id: frame.id },
          })
        );
      }
    } else if (frame.op === 'gap') {
      live.afterGap.add(frame.channel);
      emit(frame.channel, 'gap', null, frame); // events were lost: reload the state
    } else if (frame.op === 'error') {
      emit('*', 'error', frame, frame);
    } else if (frame.op === 'subscribed') {
      if (frame.own) live.own = frame.channel; // first on each socket, before its events
      emit(frame.channel, 'subscribed', null, frame);
      if (live.unsure.delete(frame.channel)) {
        emit(frame.channel, 'gap', null, { op: 'gap', channel: frame.channel });
      }
    } else if (frame.op === 'pong') {
      const wait = live.awaitingPong.get(frame.id);
      if (wait) {
        live.awaitingPong.delete(frame.id);
        wait.resolve();
      }
      emit('*', 'pong', null, frame);
    }
  }

  function wsUrl() {
    const url = new URL(config.prefix + '/ws', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    // Ask to be told which channel is our own; after a socket before, say how far we
    // got on it, so the server replays the rest ahead of any live event (a subscribe
    // sent after the open could be answered after a live event newer than the rest).
    url.searchParams.set('own', live.own || '');
    if (live.own && live.lastIds.has(live.own)) {
      url.searchParams.set('since', live.lastIds.get(live.own));
    }
    return url.href;
  }

  /** Open the websocket (once); it reconnects with backoff until disconnect(). */
  function connect() {
    live.wanted = true;
    if (live.ws || live.timer) return FlaskPush;
    const ws = new WebSocket(wsUrl());
    live.ws = ws;
    ws.onopen = () => {
      // after any socket before (a drop, or disconnect() and connect() again): what
      // came meanwhile may be missing
      const reconnected = live.opened;
      live.opened = true;
      // The backoff starts again only once a socket has lasted: one the server
      // closes as soon as it opens (too many tabs, a rate limit, an error) is retried
      // ever more slowly, not twice a second.
      live.steady = setTimeout(() => {
        live.attempts = 0;
      }, STEADY_AFTER);
      // Every channel again, with the last id seen, so the server replays what we missed.
      for (const channel of new Set([...live.handlers.keys(), ...live.lastIds.keys()])) {
        if (channel === '*') continue;
        if (reconnected && !live.lastIds.has(channel)) live.unsure.add(channel);
        // our own channel is joined by the server, from the id in the socket's URL
        if (channel !== live.own) join(channel);
      }
      // Proxies close quiet connections; a ping now and then keeps it open.
      live.pinger = setInterval(() => sendFrame({ op: 'ping' }), 25000);
      emit('*', reconnected ? 'reconnect' : 'open', null, null);
    };
    ws.onmessage = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      receive(frame);
    };
    ws.onclose = () => {
      clearInterval(live.pinger);
      clearTimeout(live.steady);
      live.ws = null;
      // what was asked on this socket is never answered now
      const unanswered = [...live.awaitingPong.values()];
      live.awaitingPong.clear();
      unanswered.forEach((wait) => wait.reject(socketClosed()));
      emit('*', 'close', null, null);
      if (!live.wanted) return;
      // 0.5 s, 1 s, 2 s ... up to 30 s, jittered so that a restarted server is not
      // hit by every browser at the same instant.
      const delay = Math.min(30000, 500 * 2 ** live.attempts) * (0.5 + Math.random() / 2);
      live.attempts += 1;
      live.timer = setTimeout(() => {
        live.timer = null;
        connect();
      }, delay);
    };
    return FlaskPush;
  }

  function disconnect() {
    live.wanted = false;
    clearTimeout(live.timer);
    live.timer = null;
    if (live.ws) live.ws.close();
  }

  function socketClosed() {
    return Object.assign(new Error('The live connection is not open.'), { code: 'closed' });
  }

  /** Resolves on the server's answer to this ping: everything sent before it has been
   *  handled. A socket still connecting is waited for; rejects (err.code 'closed')
   *  when there is none, or it closes first. */
  async function ping() {
    if (live.ws && live.ws.readyState === WebSocket.CONNECTING) await opened();
    return new Promise((resolve, reject) => {
      if (!live.ws || live.ws.readyState !== WebSocket.OPEN) {
        reject(socketClosed());
        return;
      }
      live.pings += 1;
      live.awaitingPong.set(live.pings, { resolve, reject });
      sendFrame({ op: 'ping', id: live.pings });
    });
  }

  /** Resolves when the socket connecting now has opened, or has closed instead. */
  function opened() {
    return new Promise((resolve) => {
      const offs = [];
      const done = () => {
        offs.forEach((off) => off());
        resolve();
      };
      offs.push(on('*', 'open', done), on('*', 'reconnect', done), on('*', 'close', done));
    });
  }

  /** Resolves once the socket is open and the server has joined it to the user's
   *  channel (a ping answered), or the socket has closed: what is read from then on
   *  cannot miss a live change made meanwhile. */
  async function joined() {
    // No socket: waiting out a backoff (or never connected). What is read now is read
    // at once; the 'reconnect' of the next socket is when to read it again.
    if (!live.ws) return;
    if (live.ws.readyState !== WebSocket.OPEN) await opened();
    await ping().catch(() => null); // closed meanwhile: nothing more to wait for
  }

  /** Call handler(data, frame) for `event` on `channel` ('*' for any of either);
   *  joins the channel. Returns a function that removes the handler. */
  function on(channel, event, handler) {
    if (!live.handlers.has(channel)) {
      live.handlers.set(channel, new Map());
      if (channel !== '*') join(channel);
    }
    const byEvent = live.handlers.get(channel);
    if (!byEvent.has(event)) byEvent.set(event, new Set());
    byEvent.get(event).add(handler);
    return () => byEvent.get(event).delete(handler);
  }

  /** Leave a channel and drop its handlers. */
  function leave(channel) {
    live.handlers.delete(channel);
    live.lastIds.delete(channel);
    live.afterGap.delete(channel);
    live.unsure.delete(channel);
    sendFrame({ op: 'unsubscribe', channel });
  }

  // -- the inbox ---------------------------------------------------------------------

  function upsert(type) {
    return (title, body, extra) =>
      api('POST', '/notifications', Object.assign({ type, title }, body == null ? {} : { body }, extra));
  }

  // Templates decide how an inbox item looks in a place ('menu' or 'history') and
  // what a click on it does; the highest priority whose satisfy() agrees wins.
  const templates = [];
  let registered = 0;

  /** registerTemplate({priority, satisfy(notify, place), template(notify, place), action(notify, place, event)})
   *  template returns a Node or an HTML string (escape item text with FlaskPush.escape). */
  function registerTemplate(spec) {
    templates.push(Object.assign({ priority: 0, satisfy: () => true, order: registered++ }, spec));
    // the later of two equal priorities wins, so a host can replace a default
    templates.sort((a, b) => b.priority - a.priority || b.order - a.order);
    return spec;
  }

  function resolveTemplate(notify, place) {
    return templates.find((t) => t.satisfy(notify, place));
  }

  const ENTITIES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

  /** Text made safe for HTML, in element content and in quoted attribute values. */
  function escape(text) {
    return (text == null ? '' : String(text)).replace(/[&<>"']/g, (c) => ENTITIES[c]);
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function when(iso) {
    const date = new Date(iso);
    const seconds = Math.round((date - Date.now()) / 1000);
    if (Math.abs(seconds) < 45) return 'just now';
    const format = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
    for (const [unit, size] of [['minute', 60], ['hour', 3600], ['day', 86400]]) {
      const next = unit === 'minute' ? 3600 : unit === 'hour' ? 86400 : 7 * 86400;
      if (Math.abs(seconds) < next) return format.format(Math.round(seconds / size), unit);
    }
    return date.toLocaleDateString();
  }

  function progressBar(progress) {
    if (!progress || !progress.total) return null;
    const share = Math.max(0, Math.min(1, progress.processed / progress.total));
    const bar = el('div', 'fp-progress');
    bar.title = `${progress.processed} / ${progress.total}`;
    const fill = el('div', 'fp-progress-fill');
    fill.style.width = `${Math.round(share * 100)}%`;
    bar.appendChild(fill);
    return bar;
  }

  /** A type as people read it: the host's label from `labels`, else the slug in
   *  words ('new_order' -> 'New order'). */
  function typeLabel(type, labels) {
    const key = type || 'info';
    if (labels && Object.prototype.hasOwnProperty.call(labels, key)) return String(labels[key]);
    const words = key.replace(/[_-]+/g, ' ').trim();
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  // Every time the bell shows goes through here, so an item reads the same in the
  // menu and the history, loaded from the API or arrived live. It is the item's
  // creation time: updatedAt also moves when the item is merely read.
  function timeOf(notify) {
    const node = el('time', 'fp-time', when(notify.createdAt));
    node.dateTime = notify.createdAt;
    node.title = new Date(notify.createdAt).toLocaleString();
    return node;
  }

  // The default look: a dot for unread, title, body, progress, and when (with the
  // type's label in the history). A click opens the item's url: the bell has marked
  // it read on the server by then.
  registerTemplate({
    priority: -1,
    template(notify, place, options) {
      const item = el('div', `fp-item fp-type-${notify.type || 'info'}`);
      const text = el('div', 'fp-item-text');
      // each in the direction of its own words: Hebrew or Arabic reads right to left,
      // with its punctuation at the end of the sentence, not the start
      text.appendChild(Object.assign(el('div', 'fp-item-title', notify.title), { dir: 'auto' }));
      if (notify.body) {
        text.appendChild(Object.assign(el('div', 'fp-item-body', notify.body), { dir: 'auto' }));
      }
      const bar = progressBar(notify.progress);
      if (bar) text.appendChild(bar);
      const meta = el('div', 'fp-item-meta');
      if (place === 'history') {
        meta.append(typeLabel(notify.type, options && options.typeLabels), ' · ');
      }
      if (notify.createdAt) meta.appendChild(timeOf(notify));
      text.appendChild(meta);
      const dot = el('span', notify.isNew ? 'fp-dot' : 'fp-dot fp-dot-read');
      if (notify.isNew) {
        // seen, and heard too: a screen reader says which items are unread
        dot.setAttribute('role', 'img');
        dot.setAttribute('aria-label', 'Unread');
      }
      item.appendChild(dot);
      item.appendChild(text);
      return item;
    },
    async action(notify) {
      if (notify.url) location.href = appLink(notify.url, (await whereTheAppIs()).root);
    },
  });

  function render(notify, place, options) {
    const spec = resolveTemplate(notify, place);
    const made = spec.template(notify, place, options);
    if (typeof made !== 'string') return made;
    const wrap = el('div');
    wrap.innerHTML = made;
    // One element (with blank lines around it, as a template literal has) is the
    // item itself; anything more, text beside it or a second element, is all shown.
    const shown = [...wrap.childNodes].filter(
      (node) => node.nodeType !== Node.TEXT_NODE || node.textContent.trim()
    );
    return shown.length === 1 && shown[0] === wrap.firstElementChild ? shown[0] : wrap;
  }

  // -- notification settings (README: Notification policy) ---------------------------

  // The channels in the order people meet them, in plain words.
  const CHANNELS = ['web', 'mobile', 'inbox'];
  const CHANNEL_LABELS = { web: 'Browser', mobile: 'Phone app', inbox: 'Inbox' };
  // Proposed when quiet hours are turned on for the first time.
  const QUIET_START = '22:00';
  const QUIET_END = '07:00';
  // Ids unique on the page: labels and descriptions point at their controls by id.
  let madeIds = 0;
  const uniqueId = () => `fp-id-${++madeIds}`;

  /** The IANA time zone this browser is in (UTC when it cannot tell). */
  function browserTimeZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    } catch (err) {
      return 'UTC';
    }
  }

  // A <select> of the zones the browser knows, else a text field. The chosen zone is
  // always among the options: a browser may name its own zone by an alias that its
  // list spells otherwise (Asia/Calcutta, Asia/Kolkata).
  function timeZoneField(chosen) {
    const zones =
      typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
    if (!zones.length) {
      const input = el('input');
      input.type = 'text';
      input.autocomplete = 'off';
      input.spellcheck = false;
      input.value = chosen;
      return input;
    }
    const select = el('select');
    for (const zone of [...new Set(zones.concat(chosen))].sort()) {
      const option = el('option', null, zone.replace(/_/g, ' '));
      option.value = zone;
      select.appendChild(option);
    }
    select.value = chosen;
    return select;
  }

  // A time field's value as the API takes it, HH:MM: a browser may add seconds (22:00:00).
  function hhmm(value) {
    return value.length === 8 && value.endsWith(':00') ? value.slice(0, 5) : value;
  }

  // An error's field as the server names it ('quietHours.timeZone', 'categories.offers.web',
  // maybe 'quiet_hours[time_zone]'), in a form that compares alike.
  function fieldKey(field) {
    return String(field).replace(/\[([^\]]*)\]/g, '.$1').replace(/_/g, '').toLowerCase();
  }

  /** The signed-in user's notification settings in `element`: per category, a checkbox
   *  for each channel it lets the user choose (a required one shows them checked and
   *  disabled, "Always on"), and quiet hours with the browser's time zone proposed.
   *  Save sends the changes (PATCH /preferences); the server's error shows next to the
   *  field it names, and what the user typed stays.
   *  options: {channelLabels: {web, mobile, inbox}}.
   *  Returns {element, ready, reload(), save(), destroy()}: ready and reload() resolve
   *  to the preferences shown (null when they could not be read: the element says
   *  why), save() to the preferences saved (null when the server refused them). */
  function preferences(element, options) {
    const opts = Object.assign({ channelLabels: {} }, options);
    const labels = Object.assign({}, CHANNEL_LABELS, opts.channelLabels);
    addStylesheet();
    element.classList.add('fp-prefs');
    // saved: what the server last said; form: its controls; errors: field key -> where
    // an error about it shows (and the control it names)
    const state = { saved: null, form: null, errors: new Map(), saving: false, alive: true };

    function show(node) {
      element.textContent = '';
      element.appendChild(node);
    }

    function errorBox() {
      const box = el('p', 'fp-prefs-error');
      box.id = uniqueId();
      box.setAttribute('role', 'alert');
      box.hidden = true;
      return box;
    }

    // A checkbox inside its label: a click on the words toggles it too.
    function checkbox(text) {
      const label = el('label', 'fp-check');
      const input = el('input');
      input.type = 'checkbox';
      label.append(input, el('span', null, text));
      return { label, input };
    }

    // A control with its label above it, and its error below.
    function stacked(text, control, key) {
      const wrap = el('div', 'fp-prefs-field');
      const label = el('label', null, text);
      control.id = uniqueId();
      label.htmlFor = control.id;
      const error = errorBox();
      wrap.append(label, control, error);
      state.errors.set(fieldKey(key), { box: error, control });
      return wrap;
    }

    function categoryGroup(category) {
      const group = el('fieldset', 'fp-prefs-group');
      group.dataset.category = category.id;
      const legend = el('legend', 'fp-prefs-legend', category.label);
      // part of the group's name: "Order updates Always on"
      if (category.required) legend.append(' ', el('span', 'fp-prefs-always', 'Always on'));
      group.appendChild(legend);
      const list = el('div', 'fp-prefs-channels');
      const error = errorBox();
      const channels = category.channels || {};
      const names = CHANNELS.filter((c) => c in channels).concat(
        Object.keys(channels).filter((c) => !CHANNELS.includes(c))
      );
      let first = null;
      for (const channel of names) {
        const { label, input } = checkbox(labels[channel] || typeLabel(channel));
        input.dataset.channel = channel;
        input.checked = category.required || Boolean(channels[channel]);
        input.disabled = Boolean(category.required);
        list.appendChild(label);
        const key = fieldKey(`categories.${category.id}.${channel}`);
        state.errors.set(key, { box: error, control: input });
        first = first || input;
      }
      state.errors.set(fieldKey(`categories.${category.id}`), { box: error, control: first });
      group.append(list, error);
      return group;
    }

    function quietGroup(quiet) {
      const group = el('fieldset', 'fp-prefs-group fp-prefs-quiet');
      group.appendChild(el('legend', 'fp-prefs-legend', 'Quiet hours'));
      const { label, input: on } = checkbox('Hold push notifications during quiet hours');
      on.className = 'fp-quiet-on';
      on.checked = Boolean(quiet);
      const hint = el(
        'p',
        'fp-prefs-hint',
        // not "everything": a category whose inbox is off writes no inbox item
        'They arrive when quiet hours end, except those that are always on. ' +
          'What you let into your inbox still arrives there at once.'
      );
      hint.id = uniqueId();
      on.setAttribute('aria-describedby', hint.id);
      const start = el('input', 'fp-quiet-start');
      start.type = 'time';
      start.step = 60; // minutes, no seconds
      start.value = quiet ? quiet.start : QUIET_START;
      const end = el('input', 'fp-quiet-end');
      end.type = 'time';
      end.step = 60;
      end.value = quiet ? quiet.end : QUIET_END;
      const zone = timeZoneField(quiet ? quiet.timeZone : browserTimeZone());
      zone.classList.add('fp-quiet-zone');
      const times = el('div', 'fp-prefs-times');
      times.append(
        stacked('From', start, 'quietHours.start'),
        stacked('Until', end, 'quietHours.end'),
        stacked('Time zone', zone, 'quietHours.timeZone')
      );
      const error = errorBox();
      state.errors.set(fieldKey('quietHours'), { box: error, control: on });
      const enable = () => [start, end, zone].forEach((c) => (c.disabled = !on.checked));
      on.addEventListener('change', enable);
      enable();
      group.append(label, hint, times, error);
      return group;
    }

    function build(prefs) {
      state.errors = new Map();
      const form = el('form', 'fp-prefs-form');
      form.noValidate = true; // the server's checks and messages are the ones shown
      const general = errorBox();
      state.errors.set('', { box: general, control: null });
      form.appendChild(general);
      if (!prefs.categories.length) {
        form.appendChild(el('p', 'fp-prefs-hint', 'There are no notifications to choose from.'));
      } else {
        prefs.categories.forEach((category) => form.appendChild(categoryGroup(category)));
        form.appendChild(quietGroup(prefs.quietHours));
      }
      const actions = el('div', 'fp-prefs-actions');
      const button = el('button', 'fp-button', 'Save');
      button.type = 'submit';
      const status = el('span', 'fp-prefs-status');
      status.setAttribute('role', 'status'); // polite: "Saved" is read out once the user pauses
      actions.append(button, status);
      if (prefs.categories.length) form.appendChild(actions);
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        save();
      });
      // an edit after "Saved" makes it untrue
      form.addEventListener('change', () => say(''));
      state.form = form;
      show(form);
    }

    function say(text) {
      const status = state.form && state.form.querySelector('.fp-prefs-status');
      if (status) status.textContent = text;
    }

    function controls() {
      const form = state.form;
      return {
        boxes: [...form.querySelectorAll('.fp-prefs-group[data-category] input[data-channel]')],
        on: form.querySelector('.fp-quiet-on'),
        start: form.querySelector('.fp-quiet-start'),
        end: form.querySelector('.fp-quiet-end'),
        zone: form.querySelector('.fp-quiet-zone'),
      };
    }

    const categoryId = (input) => input.closest('.fp-prefs-group').dataset.category;

    function categoryOf(input) {
      return state.saved.categories.find((category) => category.id === categoryId(input));
    }

    // Only what the user changed since the server's last answer: a change made
    // meanwhile in another tab (or on the phone) to another channel is kept.
    function changes() {
      const c = controls();
      const body = {};
      for (const input of c.boxes) {
        const category = categoryOf(input);
        if (!category || category.required) continue;
        const was = Boolean(category.channels[input.dataset.channel]);
        if (input.checked === was) continue;
        body.categories = body.categories || {};
        body.categories[category.id] = body.categories[category.id] || {};
        body.categories[category.id][input.dataset.channel] = input.checked;
      }
      if (c.on) {
        const now = c.on.checked
          ? { start: hhmm(c.start.value), end: hhmm(c.end.value), timeZone: c.zone.value.trim() }
          : null;
        const was = state.saved.quietHours;
        const same =
          now && was
            ? now.start === was.start && now.end === was.end && now.timeZone === was.timeZone
            : !now && !was;
        if (!same) body.quietHours = now;
      }
      return Object.keys(body).length ? body : null;
    }

    // The server's answer into the controls, which keep the focus; a different set of
    // categories (the host's config changed) draws the form anew.
    function apply(prefs) {
      const c = controls();
      const shown = c.boxes.map((box) => `${categoryId(box)}.${box.dataset.channel}`);
      const given = [];
      prefs.categories.forEach((category) =>
        Object.keys(category.channels || {}).forEach((ch) => given.push(`${category.id}.${ch}`))
      );
      if (shown.sort().join() !== given.sort().join()) return build(prefs);
      for (const input of c.boxes) {
        const category = categoryOf(input);
        input.checked = category.required || Boolean(category.channels[input.dataset.channel]);
      }
      if (c.on && prefs.quietHours) {
        c.on.checked = true;
        c.start.value = prefs.quietHours.start;
        c.end.value = prefs.quietHours.end;
        c.zone.value = prefs.quietHours.timeZone;
      } else if (c.on) {
        c.on.checked = false;
      }
      if (c.on) c.on.dispatchEvent(new Event('change', { bubbles: false }));
    }

    function clearErrors() {
      for (const { box, control } of state.errors.values()) {
        box.hidden = true;
        box.textContent = '';
        if (control) {
          control.removeAttribute('aria-invalid');
          const ids = (control.getAttribute('aria-describedby') || '').split(' ');
          const kept = ids.filter((each) => each && each !== box.id).join(' ');
          if (kept) control.setAttribute('aria-describedby', kept);
          else control.removeAttribute('aria-describedby');
        }
      }
    }

    // The error next to the field it names (or the nearest enclosing one the form
    // has, else above the form), the control marked invalid and focused.
    function showError(err) {
      let key = err.field ? fieldKey(err.field) : '';
      while (key && !state.errors.has(key)) key = key.slice(0, Math.max(0, key.lastIndexOf('.')));
      const { box, control } = state.errors.get(key);
      // The API's messages speak of their field ("must differ from start"): shown
      // next to it, they read as a sentence.
      const message = String(err.message || 'The settings were not saved.');
      box.textContent = message.charAt(0).toUpperCase() + message.slice(1);
      box.hidden = false;
      if (control) {
        control.setAttribute('aria-invalid', 'true');
        const ids = (control.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
        control.setAttribute('aria-describedby', ids.concat(box.id).join(' '));
        if (!control.disabled) control.focus();
      }
    }

    async function save() {
      if (!state.form || state.saving) return null;
      clearErrors();
      const body = changes();
      if (!body) {
        say('No changes to save.');
        return state.saved;
      }
      state.saving = true;
      say('Saving…');
      try {
        const prefs = await api('PATCH', '/preferences', body);
        if (!state.alive) return prefs;
        state.saved = prefs;
        apply(prefs);
        say('Saved.');
        return prefs;
      } catch (err) {
        say('');
        showError(err);
        return null;
      } finally {
        state.saving = false;
      }
    }

    async function reload() {
      const loading = el('p', 'fp-prefs-hint', 'Loading your notification settings…');
      loading.setAttribute('role', 'status');
      state.form = null;
      show(loading);
      let prefs;
      try {
        prefs = await api('GET', '/preferences');
      } catch (err) {
        if (!state.alive) return null;
        const failed = el('div', 'fp-prefs-failed');
        const text = `Your notification settings could not be loaded: ${err.message}`;
        const why = el('p', 'fp-prefs-error', text);
        why.setAttribute('role', 'alert');
        const again = el('button', 'fp-button fp-button-quiet', 'Try again');
        again.type = 'button';
        again.addEventListener('click', reload);
        failed.append(why, again);
        show(failed);
        return null;
      }
      if (!state.alive) return prefs;
      state.saved = prefs;
      build(prefs);
      return prefs;
    }

    const ready = reload();
    return {
      element,
      ready,
      reload,
      save,
      get preferences() {
        return state.saved;
      },
      destroy() {
        state.alive = false;
        element.textContent = '';
        element.classList.remove('fp-prefs');
      },
    };
  }

  // -- the bell ------------------------------------------------------------------

  const BELL_ICON =
    '<svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path fill="currentColor" ' +
    'd="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 ' +
    '1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1z"/></svg>';

  // The markup only: text (the host's title) is set through the DOM, never spliced in.
  const BELL_HTML =
    // a disclosure (aria-expanded, aria-controls), not aria-haspopup: that promises a
    // menu, with arrow keys and menu items, which the panel is not
    `<button type="button" class="fp-bell-button" aria-expanded="false">` +
    `${BELL_ICON}<span class="fp-badge" hidden></span></button>` +
    // read out by screen readers when a new item arrives live (polite: after what
    // the user is doing); outside the panel, so it speaks while the menu is closed
    `<span class="fp-announce" role="status"></span>` +
    `<div class="fp-panel" hidden><div class="fp-head"><span class="fp-title"></span>` +
    `<button type="button" class="fp-link fp-mark-all">Mark all as read</button></div>` +
    `<ul class="fp-list"></ul><div class="fp-foot">` +
    `<button type="button" class="fp-link fp-show-history">See all</button></div></div>` +
    // showModal() puts a <dialog> in the top layer: a host's header with transform,
    // filter or backdrop-filter cannot trap it or its backdrop, as it traps position:fixed
    `<dialog class="fp-dialog fp-history"><div class="fp-head"><span class="fp-title"></span>` +
    `<button type="button" class="fp-link fp-close">Close</button></div>` +
    `<ul class="fp-list"></ul><div class="fp-foot">` +
    `<button type="button" class="fp-link fp-show-older" hidden>Show older</button>` +
    `</div></dialog>` +
    `<dialog class="fp-dialog fp-settings"><div class="fp-head">` +
    `<h2 class="fp-dialog-title">Notification settings</h2>` +
    `<button type="button" class="fp-link fp-close">Close</button></div>` +
    `<div class="fp-settings-body"></div></dialog>`;

  // A stylesheet file, not a <style>: a page whose CSP has style-src 'self' (no
  // 'unsafe-inline') accepts it. Linked first in <head>, so the page's own rules
  // win over the bell's at equal specificity.
  function addStylesheet() {
    if (config.stylesheet === false) return;
    const file = config.stylesheet || `${config.prefix}/static/flask-push.css`;
    const href = new URL(file, location.href).href;
    for (const link of document.querySelectorAll('link[rel~="stylesheet"]')) {
      if (link.href === href) return; // linked by the page, or by another bell
    }
    const link = el('link');
    link.rel = 'stylesheet';
    link.href = href;
    document.head.prepend(link);
  }

  /** A notification bell in `element`: unread badge, menu, history, mark-all-read, and
   *  a way to the user's notification settings.
   *  options: {take: items in the menu (10), historyTake: items per page of the history
   *  (50), title, typeLabels: {type: label} for the history, preferencesUrl (false:
   *  no settings in the menu), channelLabels}. */
  function bell(element, options) {
    const opts = Object.assign(
      { take: 10, historyTake: 50, title: 'Notifications', typeLabels: {} },
      options
    );
    addStylesheet();
    element.classList.add('fp-bell');
    element.innerHTML = BELL_HTML;
    const $ = (selector) => element.querySelector(selector);
    const button = $('.fp-bell-button');
    const badge = $('.fp-badge');
    const panel = $('.fp-panel');
    const history = $('.fp-history');
    const settings = $('.fp-settings');
    let settingsForm = null; // FlaskPush.preferences() in the settings dialog, once opened
    element.querySelectorAll('.fp-title').forEach((title) => (title.textContent = opts.title));
    panel.id = uniqueId();
    button.setAttribute('aria-controls', panel.id);
    history.setAttribute('aria-label', opts.title);
    const settingsTitle = settings.querySelector('.fp-dialog-title');
    settingsTitle.id = uniqueId();
    settings.setAttribute('aria-labelledby', settingsTitle.id);
    // "Notification settings" in the menu: a link to the host's own settings page when
    // it gives preferencesUrl (where the user expects to find settings, and a URL to
    // share or bookmark), else FlaskPush.preferences() in a dialog of the bell's own, so
    // that a host with no such page still lets users choose without any more code.
    // preferencesUrl false: none (the host knows this user has nothing to choose).
    const toSettings = el(opts.preferencesUrl ? 'a' : 'button', 'fp-link fp-show-settings');
    toSettings.textContent = 'Notification settings';
    if (opts.preferencesUrl) toSettings.href = opts.preferencesUrl;
    else toSettings.type = 'button';
    // shown once the user is known to have categories to choose (offerSettings)
    toSettings.hidden = true;
    if (opts.preferencesUrl !== false) $('.fp-foot').appendChild(toSettings);
    // items: the menu's; history: the dialog's while it is open; counted: live unread
    // counts received (a listing read before the latest of them has an older count)
    // problem: what the bell could not do, shown above the items until it is done
    // asked, applied: listings asked for and the latest shown (an older one that
    // arrives later is dropped)
    // historyTotal: how many items the user has, as of the history's last page
    const state = {
      items: [], history: [], historyTotal: 0, count: 0, counted: 0, problem: null,
      asked: 0, applied: 0,
    };

    function setCount(count) {
      state.count = Math.max(0, count);
      badge.textContent = state.count > 99 ? '99+' : String(state.count);
      badge.hidden = state.count === 0;
      // A button turned off loses the focus to the page, where Escape no longer
      // reaches the menu: a keyboard user who had it goes back to the bell.
      const markAll = $('.fp-mark-all');
      if (state.count === 0 && document.activeElement === markAll) button.focus();
      markAll.disabled = state.count === 0;
      button.setAttribute('aria-label', `${opts.title} (${state.count} unread)`);
    }

    function fill(list, items, place) {
      // drawn again: the keyboard focus stays on the item it was on
      const focused = list.contains(document.activeElement) && document.activeElement.dataset.id;
      list.textContent = '';
      if (!items.length) list.appendChild(el('li', 'fp-empty', 'Nothing here yet.'));
      for (const notify of items) {
        const li = el('li', 'fp-entry');
        li.dataset.id = notify.id;
        li.tabIndex = 0;
        li.appendChild(render(notify, place, opts));
        li.addEventListener('click', (event) => choose(notify, place, event));
        li.addEventListener('keydown', (event) => {
          // Enter and Space, as on a button; Space only on the item itself, not on a
          // template's own button in it, and without scrolling the page
          if (event.key === 'Enter') choose(notify, place, event);
          else if (event.key === ' ' && event.target === li) {
            event.preventDefault();
            choose(notify, place, event);
          }
        });
        list.appendChild(li);
        if (notify.id === focused) li.focus();
      }
    }

    function renderMenu() {
      const list = panel.querySelector('.fp-list');
      fill(list, state.items.slice(0, opts.take), 'menu');
      if (state.problem) {
        if (!state.items.length) list.textContent = ''; // not "Nothing here yet."
        const said = el('li', 'fp-empty fp-problem', state.problem);
        said.setAttribute('role', 'alert');
        list.prepend(said);
      }
    }

    const older = history.querySelector('.fp-show-older');
    function renderHistory() {
      if (!history.open) return;
      fill(history.querySelector('.fp-list'), state.history, 'history');
      older.hidden = state.history.length >= state.historyTotal;
      older.parentElement.hidden = older.hidden; // no empty strip under the last item
    }

    async function refresh() {
      const counted = state.counted;
      const asked = ++state.asked;
      const page = await api('GET', `/notifications?take=${opts.take}`);
      if (asked < state.applied) return; // a later listing is shown already
      state.applied = asked;
      state.items = newest(page.items, state.items);
      state.problem = null;
      // a live count that came while the listing was on its way is the newer one
      if (state.counted === counted) setCount(page.newCount);
      renderMenu();
    }

    // What the bell could not do, said in its menu (and the console), not swallowed.
    function failed(what, err) {
      console.error(`flask-push: ${what}:`, err);
      state.problem = `${what}: ${err.message || err}`;
      renderMenu();
    }
    const notLoaded = (err) => failed('The notifications could not be loaded', err);

    // Settings without a category to choose would be a dead end ("There are no
    // notifications to choose from"): the menu offers them only when there is one.
    // Unreadable now, they are offered all the same: opened, they say why.
    async function offerSettings() {
      if (opts.preferencesUrl === false) return;
      try {
        const prefs = await api('GET', '/preferences');
        toSettings.hidden = !(prefs.categories && prefs.categories.length);
      } catch (err) {
        toSettings.hidden = false;
      }
    }
    const refreshShown = () => refresh().catch(notLoaded);

    // an item's time (createdAt, updatedAt) to compare; one without counts as oldest
    const time = (text) => Date.parse(text) || 0;

    // A live event may overtake the listing that was read before it: of each item,
    // keep the later version, and keep items newer than the whole listing.
    function newest(listed, held) {
      const mine = new Map(held.map((item) => [item.id, item]));
      const kept = listed.map((item) => {
        const live = mine.get(item.id);
        return live && time(live.updatedAt) > time(item.updatedAt) ? live : item;
      });
      const ids = new Set(listed.map((item) => item.id));
      const since = listed.length ? time(listed[0].createdAt) : 0;
      const added = held.filter((item) => !ids.has(item.id) && time(item.createdAt) > since);
      return added.concat(kept).slice(0, Math.max(opts.take, kept.length));
    }

    // A click on an item marks it read on the server, whatever its template does,
    // and only then runs the template's action: the default opens the item's url,
    // and leaving the page earlier could cancel the request.
    async function choose(notify, place, event) {
      const spec = resolveTemplate(notify, place);
      if (notify.isNew) await markRead(notify);
      if (spec.action) await spec.action(notify, place, event);
    }

    async function markRead(notify) {
      // Shown read at once; the server's live `unread` event then brings the exact count.
      showRead(notify.id);
      setCount(state.count - 1);
      try {
        const path = `/notifications/${encodeURIComponent(notify.id)}/read`;
        const result = await api('POST', path, {});
        if (result.updated !== 1) await refresh(); // it was read elsewhere meanwhile
      } catch (err) {
        // Show what the server has (unreachable: the item as it was), and say why.
        await refresh().catch(() => {
          setCount(state.count + 1);
          showRead(notify.id, false);
        });
        failed('Could not mark it as read', err);
      }
    }

    function showRead(id, read = true) {
      for (const item of state.items.concat(state.history)) {
        if (item.id === id) item.isNew = !read;
      }
      renderMenu();
      renderHistory();
    }

    // The same words twice in a row are still news: the region is emptied and filled
    // a moment later, so that screen readers see a change and read it out again.
    const spoken = $('.fp-announce');
    let speaking = null;
    function announce(text) {
      spoken.textContent = '';
      clearTimeout(speaking);
      speaking = setTimeout(() => (spoken.textContent = text), 100);
    }

    function flash() {
      button.classList.remove('fp-flash');
      void button.offsetWidth; // restart the animation
      button.classList.add('fp-flash');
    }
    button.addEventListener('animationend', () => button.classList.remove('fp-flash'));

    function onInbox(event) {
      const { event: name, data } = event.detail;
      if (name === 'unread') {
        const before = state.count;
        state.counted += 1;
        setCount(data.count);
        // read elsewhere (another tab, the phone): the dots here are out of date (a
        // read here lowered the count itself first, so it does not come here)
        const shownUnread = state.items.some((item) => item.isNew);
        if (data.count === 0 && shownUnread) {
          state.items.concat(state.history).forEach((item) => (item.isNew = false));
          renderMenu();
          renderHistory();
        } else if (data.count < before && shownUnread) {
          refreshShown();
        }
      } else if (name === 'notification') {
        // changed since it was made (an activity's next state), shown in the menu or
        // not: a new item's two times are the same
        const updated = time(data.updatedAt) > time(data.createdAt);
        // an item it has already is updated where it is (a live activity's next
        // state); a new one goes where the listing (newest first) has it, and the
        // menu keeps only its latest, so a tab left open all day holds no more
        state.items = upsertItem(state.items, data).slice(0, opts.take);
        renderMenu();
        if (history.open && inHistory(data)) {
          if (!state.history.some((item) => item.id === data.id)) state.historyTotal += 1;
          state.history = upsertItem(state.history, data);
          renderHistory();
        }
        if (data.isNew) {
          flash();
          announce(`${updated ? 'Updated' : 'New'} notification: ${data.title}`);
        }
      }
    }
    document.addEventListener('new-notification-event', onInbox);

    // Whether the history's pages shown so far hold `item`: one it shows, or one no
    // older than its last. An older one (an old order's next state) comes in its own
    // page: added below the last, it would take the place "Show older" skips to.
    function inHistory(item) {
      const last = state.history[state.history.length - 1];
      if (!last || state.history.length >= state.historyTotal) return true;
      if (state.history.some((held) => held.id === item.id)) return true;
      return time(item.createdAt) >= time(last.createdAt);
    }

    function upsertItem(items, item) {
      const at = items.findIndex((held) => held.id === item.id);
      const updated = items.slice();
      if (at >= 0) {
        // two states of an activity saved at once may be announced in either
        // order: the later save is the one to show
        if (time(items[at].updatedAt) > time(item.updatedAt)) return items;
        updated[at] = item;
        return updated;
      }
      // before the first item created no later than it: the listing's order
      const created = time(item.createdAt);
      const before = updated.findIndex((held) => time(held.createdAt) <= created);
      updated.splice(before < 0 ? updated.length : before, 0, item);
      return updated;
    }

    function open() {
      renderMenu(); // "5 minutes ago" is as of now
      panel.hidden = false;
      button.setAttribute('aria-expanded', 'true');
      keepOnScreen();
    }
    // The menu hangs below the button, aligned to its right edge; a bell near the
    // left of the page would push it off-screen, so shift it right as far as needed.
    // (Set through the DOM: a strict CSP allows that, unlike style attributes.)
    function keepOnScreen() {
      panel.style.right = '';
      const left = panel.getBoundingClientRect().left;
      const margin = 8;
      if (left < margin) panel.style.right = `${left - margin}px`;
    }
    function close() {
      panel.hidden = true;
      button.setAttribute('aria-expanded', 'false');
    }
    async function showHistory() {
      close();
      let failure = null;
      try {
        const page = await api('GET', `/notifications?take=${opts.historyTake}`);
        state.history = page.items;
        state.historyTotal = page.totalCount;
      } catch (err) {
        failure = err;
        state.history = [];
        state.historyTotal = 0;
      }
      if (!history.open) history.showModal();
      renderHistory();
      if (failure) {
        const list = history.querySelector('.fp-list');
        list.textContent = '';
        const why = `The notifications could not be loaded: ${failure.message}`;
        list.appendChild(el('li', 'fp-empty', why));
      }
    }
    // The next page of the history, after what it shows. An item that arrived since
    // moves the rest one place down, so the page may repeat the last one shown: each
    // item is kept once.
    async function showOlder() {
      older.disabled = true;
      try {
        const skip = state.history.length;
        const page = await api('GET', `/notifications?skip=${skip}&take=${opts.historyTake}`);
        if (!history.open) return; // closed meanwhile: it starts afresh when opened
        const shown = new Set(state.history.map((item) => item.id));
        const added = page.items.filter((item) => !shown.has(item.id));
        state.history = state.history.concat(added);
        state.historyTotal = page.totalCount;
        renderHistory();
        // the button goes once there is no more: the keyboard goes on from the first
        // item it brought, which is where the reader was going
        const first = added.length
          ? history.querySelector(`li[data-id="${CSS.escape(added[0].id)}"]`)
          : null;
        if (older.hidden && first) first.focus();
      } catch (err) {
        if (!history.open) return;
        const said = `Older notifications could not be loaded: ${err.message || err}`;
        const why = el('li', 'fp-empty fp-problem', said);
        why.setAttribute('role', 'alert');
        history.querySelector('.fp-list').appendChild(why);
      } finally {
        older.disabled = false;
      }
    }
    older.addEventListener('click', showOlder);
    function closeHistory() {
      if (history.open) history.close();
    }
    // Read again at each opening: the user may have changed them elsewhere meanwhile.
    function showSettings() {
      close();
      const body = settings.querySelector('.fp-settings-body');
      let loaded;
      if (!settingsForm) {
        settingsForm = preferences(body, { channelLabels: opts.channelLabels });
        loaded = settingsForm.ready;
      } else {
        loaded = settings.open ? Promise.resolve(settingsForm.preferences) : settingsForm.reload();
      }
      if (!settings.open) settings.showModal();
      return loaded;
    }
    function closeSettings() {
      if (settings.open) settings.close();
    }
    async function markAllRead() {
      try {
        await api('POST', '/notifications/mark-all-read', {});
      } catch (err) {
        failed('Could not mark them as read', err);
        throw err;
      }
      state.problem = null;
      state.items.concat(state.history).forEach((item) => (item.isNew = false));
      setCount(0);
      renderMenu();
      renderHistory();
    }

    button.addEventListener('click', () => (panel.hidden ? open() : close()));
    $('.fp-mark-all').addEventListener('click', () => markAllRead().catch(() => null));
    $('.fp-show-history').addEventListener('click', showHistory);
    if (!opts.preferencesUrl) toSettings.addEventListener('click', showSettings);
    for (const dialog of [history, settings]) {
      dialog.querySelector('.fp-close').addEventListener('click', () => dialog.close());
      dialog.addEventListener('click', (event) => {
        // the backdrop's clicks land on the dialog itself, outside its box
        const box = dialog.getBoundingClientRect();
        const inside =
          box.left <= event.clientX && event.clientX <= box.right &&
          box.top <= event.clientY && event.clientY <= box.bottom;
        if (event.target === dialog && !inside) dialog.close();
      });
      // back where the user was: the menu that opened it is closed
      dialog.addEventListener('close', () => button.focus());
    }
    history.addEventListener('close', () => {
      state.history = [];
      state.historyTotal = 0;
    });
    element.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && !panel.hidden) {
        close();
        button.focus();
      }
    });
    function outside(event) {
      // the path as dispatched: a click on an item has redrawn it (detached) by now
      if (!event.composedPath().includes(element)) close();
    }
    document.addEventListener('click', outside);
    // Tabbing on past the menu closes it, as a click elsewhere does. (No element to
    // go to: the window lost the focus, or a redrawn item did; the menu stays.)
    element.addEventListener('focusout', (event) => {
      if (event.relatedTarget && !element.contains(event.relatedTarget)) close();
    });

    // After a reconnect or a gap in the events, what we show may be stale.
    // (a gap on another channel says nothing of the inbox)
    const inboxGap = (data, frame) => frame.channel === live.own && refreshShown();
    const offs = [on('*', 'reconnect', refreshShown), on('*', 'gap', inboxGap)];
    connect();
    setCount(0);
    // The settings entry shows when (and if) GET /preferences answers: a slow or hung
    // answer must not hold the bell's items and count, which is what `ready` is for.
    offerSettings(); // never rejects
    const ready = joined().then(refresh);
    // said in the menu; a host that awaits `ready` still gets the error
    ready.catch(notLoaded);
    return {
      element,
      ready,
      refresh,
      open,
      close,
      showHistory,
      closeHistory,
      showSettings,
      closeSettings,
      markAllRead,
      get count() {
        return state.count;
      },
      destroy() {
        document.removeEventListener('new-notification-event', onInbox);
        document.removeEventListener('click', outside);
        offs.forEach((off) => off());
        closeHistory();
        closeSettings();
        if (settingsForm) settingsForm.destroy();
        element.textContent = '';
      },
    };
  }

  const FlaskPush = {
    configure,
    api,
    subscribe,
    unsubscribe,
    connect,
    disconnect,
    ping,
    on,
    leave,
    info: upsert('info'),
    warning: upsert('warning'),
    error: upsert('error'),
    registerTemplate,
    resolveTemplate,
    escape,
    bell,
    preferences,
  };
  root.FlaskPush = FlaskPush;
})(typeof globalThis !== 'undefined' ? globalThis : self);
