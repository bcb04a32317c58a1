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

  const config = { prefix: '/push', serviceWorkerUrl: '/push-sw.js', scope: undefined };

  /** Set {prefix, serviceWorkerUrl, scope}: where the app serves flask-push. */
  function configure(options) {
    Object.assign(config, options || {});
    return Object.assign({}, config);
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
    const options = config.scope ? { scope: config.scope } : undefined;
    const registration = await navigator.serviceWorker.register(config.serviceWorkerUrl, options);
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
    const script = new URL(config.serviceWorkerUrl, location.href).href;
    const registrations = await navigator.serviceWorker.getRegistrations();
    return registrations.find((r) => {
      const worker = r.active || r.waiting || r.installing;
      return worker && worker.scriptURL === script;
    });
  }

  /** Ask for permission, subscribe this browser and register it with the server.
   *  options.topics: topics to subscribe to. Resolves to the server's subscription. */
  async function subscribe(options) {
    if (!pushSupported()) throw new Error('This browser cannot receive push notifications.');
    const permission = await Notification.requestPermission();
    if (permission !== 'granted') {
      throw Object.assign(new Error('Notifications are not allowed in this browser.'), {
        code: 'permission_denied',
      });
    }
    const registration = await activeRegistration();
    const key = fromBase64Url((await api('GET', '/vapid-public-key')).publicKey);
    let subscription = await registration.pushManager.getSubscription();
    // Made with another key (the server's key was rotated): it cannot receive our pushes.
    if (subscription && !sameBytes(subscription.options.applicationServerKey, key)) {
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: key,
      });
    }
    const body = subscription.toJSON();
    if (options && options.topics) body.topics = options.topics;
    const saved = await api('POST', '/subscriptions', body);
    localStorage.setItem(STORED_ID, saved.id);
    return saved;
  }

  /** Forget this browser's subscription, on the server and in the browser. */
  async function unsubscribe() {
    const id = localStorage.getItem(STORED_ID);
    if (id) {
      await api('DELETE', '/subscriptions/' + encodeURIComponent(id)).catch((err) => {
        if (err.status !== 404) throw err; // already gone is fine
      });
      localStorage.removeItem(STORED_ID);
    }
    const registration = pushSupported() && (await ourRegistration());
    const subscription = registration && (await registration.pushManager.getSubscription());
    if (subscription) await subscription.unsubscribe();
  }

  // -- live events (CONTRACT.md section 5) ---------------------------------------

  const live = {
    ws: null,
    wanted: false, // connect() was called and disconnect() was not
    attempts: 0, // failed attempts since the last open, for the backoff
    timer: null,
    pinger: null,
    lastIds: new Map(), // channel -> last event id seen (undefined: none yet)
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
      if (last !== undefined && frame.id <= last) return; // replayed twice: seen already
      live.lastIds.set(frame.channel, frame.id);
      emit(frame.channel, frame.event, frame.data, frame);
      // The server joins the user's own channel by itself: its events are the inbox.
      if (frame.channel.startsWith('user:')) {
        document.dispatchEvent(
          new CustomEvent('new-notification-event', {
            detail: { channel: frame.channel, event: frame.event, data: frame.data, id: frame.id },
          })
        );
      }
    } else if (frame.op === 'gap') {
      emit(frame.channel, 'gap', null, frame); // events were lost: reload the state
    } else if (frame.op === 'error') {
      emit('*', 'error', frame, frame);
    } else if (frame.op === 'subscribed') {
      emit(frame.channel, 'subscribed', null, frame);
    } else if (frame.op === 'pong') {
      emit('*', 'pong', null, frame);
    }
  }

  function wsUrl() {
    const url = new URL(config.prefix + '/ws', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  /** Open the websocket (once); it reconnects with backoff until disconnect(). */
  function connect() {
    live.wanted = true;
    if (live.ws || live.timer) return FlaskPush;
    const ws = new WebSocket(wsUrl());
    live.ws = ws;
    ws.onopen = () => {
      const reconnected = live.attempts > 0 || live.lastIds.size > 0;
      live.attempts = 0;
      // Every channel again, with the last id seen, so the server replays what we missed.
      for (const channel of new Set([...live.handlers.keys(), ...live.lastIds.keys()])) {
        if (channel !== '*') join(channel);
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
      live.ws = null;
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

  /** Resolves on the server's pong: everything sent before it has been handled. */
  function ping() {
    return new Promise((resolve) => {
      const off = on('*', 'pong', () => {
        off();
        resolve();
      });
      sendFrame({ op: 'ping' });
    });
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

  function escape(text) {
    const div = document.createElement('div');
    div.textContent = text == null ? '' : String(text);
    return div.innerHTML;
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

  // The default look: a dot for unread, title, body, progress, and when.
  registerTemplate({
    priority: -1,
    template(notify, place) {
      const item = el('div', `fp-item fp-type-${notify.type || 'info'}`);
      const text = el('div', 'fp-item-text');
      text.appendChild(el('div', 'fp-item-title', notify.title));
      if (notify.body) text.appendChild(el('div', 'fp-item-body', notify.body));
      const bar = progressBar(notify.progress);
      if (bar) text.appendChild(bar);
      const meta = el('div', 'fp-item-meta', when(notify.updatedAt || notify.createdAt));
      if (place === 'history') {
        meta.textContent = `${notify.type || 'info'} · ${new Date(notify.createdAt).toLocaleString()}`;
        if (notify.updatedAt && notify.updatedAt !== notify.createdAt) {
          meta.textContent += ` · updated ${when(notify.updatedAt)}`;
        }
      }
      text.appendChild(meta);
      item.appendChild(el('span', notify.isNew ? 'fp-dot' : 'fp-dot fp-dot-read'));
      item.appendChild(text);
      return item;
    },
    action(notify) {
      const read = notify.isNew
        ? api('POST', `/notifications/${encodeURIComponent(notify.id)}/read`, {}).catch(() => null)
        : Promise.resolve();
      if (notify.url) read.then(() => (location.href = notify.url));
      return read;
    },
  });

  function render(notify, place) {
    const spec = resolveTemplate(notify, place);
    const made = spec.template(notify, place);
    if (typeof made !== 'string') return made;
    const wrap = el('div');
    wrap.innerHTML = made;
    return wrap.firstElementChild || wrap;
  }

  // -- the bell ------------------------------------------------------------------

  const BELL_ICON =
    '<svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path fill="currentColor" ' +
    'd="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 ' +
    '1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1z"/></svg>';

  const STYLE = `
.fp-bell{position:relative;display:inline-block;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;--fp-accent:#2563eb}
.fp-bell-button{position:relative;display:flex;align-items:center;justify-content:center;width:40px;height:40px;border:0;border-radius:50%;background:transparent;color:inherit;cursor:pointer}
.fp-bell-button:hover,.fp-bell-button[aria-expanded=true]{background:rgba(0,0,0,.06)}
.fp-bell-button:focus-visible{outline:2px solid var(--fp-accent);outline-offset:2px}
.fp-badge{position:absolute;top:3px;right:1px;min-width:18px;height:18px;padding:0 5px;box-sizing:border-box;border-radius:9px;background:#dc2626;color:#fff;font-size:11px;font-weight:600;line-height:18px;text-align:center;box-shadow:0 0 0 2px #fff}
.fp-badge[hidden]{display:none}
.fp-flash{animation:fp-flash .6s ease-in-out 3}
@keyframes fp-flash{0%,100%{transform:rotate(0)}20%{transform:rotate(14deg)}40%{transform:rotate(-12deg)}60%{transform:rotate(8deg);color:var(--fp-accent)}80%{transform:rotate(-4deg)}}
.fp-panel{position:absolute;right:0;top:46px;z-index:1000;width:340px;max-width:90vw;background:#fff;border:1px solid #d0d7de;border-radius:10px;box-shadow:0 8px 24px rgba(0,0,0,.12);overflow:hidden}
.fp-panel[hidden],.fp-history[hidden]{display:none}
.fp-head{display:flex;align-items:center;justify-content:space-between;padding:10px 14px;border-bottom:1px solid #eaeef2;font-weight:600}
.fp-link{border:0;background:none;padding:0;color:var(--fp-accent);font:inherit;font-weight:500;cursor:pointer}
.fp-link:hover{text-decoration:underline}
.fp-link:disabled{color:#8c959f;cursor:default;text-decoration:none}
.fp-list{list-style:none;margin:0;padding:0;max-height:360px;overflow-y:auto}
.fp-list li{border-bottom:1px solid #f0f2f4;cursor:pointer}
.fp-list li:last-child{border-bottom:0}
.fp-list li:hover{background:#f6f8fa}
.fp-empty{padding:24px 14px;color:#656d76;text-align:center}
.fp-foot{padding:8px 14px;border-top:1px solid #eaeef2;text-align:center}
.fp-item{display:flex;gap:10px;padding:10px 14px}
.fp-dot{flex:none;width:8px;height:8px;margin-top:6px;border-radius:50%;background:var(--fp-accent)}
.fp-dot-read{background:transparent}
.fp-type-warning .fp-dot:not(.fp-dot-read){background:#d97706}
.fp-type-error .fp-dot:not(.fp-dot-read){background:#dc2626}
.fp-item-text{min-width:0;flex:1}
.fp-item-title{font-weight:600;overflow-wrap:anywhere}
.fp-item-body{color:#424a53;overflow-wrap:anywhere}
.fp-panel .fp-item-body{display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical;overflow:hidden}
.fp-item-meta{margin-top:2px;color:#656d76;font-size:12px}
.fp-progress{height:4px;margin-top:6px;border-radius:2px;background:#eaeef2;overflow:hidden}
.fp-progress-fill{height:100%;background:var(--fp-accent)}
.fp-history{position:fixed;inset:0;z-index:1001;display:flex;align-items:flex-start;justify-content:center;padding:8vh 16px;background:rgba(15,23,42,.45)}
.fp-history-box{width:560px;max-width:100%;max-height:80vh;display:flex;flex-direction:column;background:#fff;border-radius:12px;box-shadow:0 16px 48px rgba(0,0,0,.25);overflow:hidden}
.fp-history .fp-list{max-height:none;flex:1}
.fp-history .fp-item{padding:12px 18px}
`;

  function addStyle() {
    if (document.getElementById('flask-push-style')) return;
    const style = el('style', null, STYLE);
    style.id = 'flask-push-style';
    document.head.appendChild(style);
  }

  /** A notification bell in `element`: unread badge, menu, history, mark-all-read.
   *  options: {take: items in the menu (10), historyTake (50), title}. */
  function bell(element, options) {
    const opts = Object.assign({ take: 10, historyTake: 50, title: 'Notifications' }, options);
    addStyle();
    element.classList.add('fp-bell');
    element.innerHTML =
      `<button type="button" class="fp-bell-button" aria-haspopup="true" aria-expanded="false" ` +
      `aria-label="${escape(opts.title)}">${BELL_ICON}<span class="fp-badge" hidden></span></button>` +
      `<div class="fp-panel" hidden><div class="fp-head"><span>${escape(opts.title)}</span>` +
      `<button type="button" class="fp-link fp-mark-all">Mark all as read</button></div>` +
      `<ul class="fp-list"></ul><div class="fp-foot">` +
      `<button type="button" class="fp-link fp-show-history">See all</button></div></div>` +
      `<div class="fp-history" hidden><div class="fp-history-box" role="dialog" aria-modal="true">` +
      `<div class="fp-head"><span>${escape(opts.title)}</span>` +
      `<button type="button" class="fp-link fp-close" aria-label="Close">Close</button></div>` +
      `<ul class="fp-list"></ul></div></div>`;
    const $ = (selector) => element.querySelector(selector);
    const button = $('.fp-bell-button');
    const badge = $('.fp-badge');
    const panel = $('.fp-panel');
    const history = $('.fp-history');
    const state = { items: [], count: 0 };

    function setCount(count) {
      state.count = Math.max(0, count);
      badge.textContent = state.count > 99 ? '99+' : String(state.count);
      badge.hidden = state.count === 0;
      $('.fp-mark-all').disabled = state.count === 0;
      button.setAttribute('aria-label', `${opts.title} (${state.count} unread)`);
    }

    function fill(list, items, place) {
      list.textContent = '';
      if (!items.length) list.appendChild(el('li', 'fp-empty', 'Nothing here yet.'));
      for (const notify of items) {
        const li = el('li');
        li.dataset.id = notify.id;
        li.appendChild(render(notify, place));
        li.addEventListener('click', (event) => {
          const spec = resolveTemplate(notify, place);
          if (notify.isNew) {
            notify.isNew = false;
            setCount(state.count - 1);
            renderMenu();
          }
          if (spec.action) spec.action(notify, place, event);
        });
        list.appendChild(li);
      }
    }

    function renderMenu() {
      fill(panel.querySelector('.fp-list'), state.items.slice(0, opts.take), 'menu');
    }

    async function refresh() {
      const page = await api('GET', `/notifications?take=${opts.take}`);
      state.items = page.items;
      setCount(page.newCount);
      renderMenu();
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
        setCount(data.count);
      } else if (name === 'notification') {
        state.items = [data].concat(state.items.filter((item) => item.id !== data.id));
        renderMenu();
        if (data.isNew) flash();
      }
    }
    document.addEventListener('new-notification-event', onInbox);

    function open() {
      panel.hidden = false;
      button.setAttribute('aria-expanded', 'true');
    }
    function close() {
      panel.hidden = true;
      button.setAttribute('aria-expanded', 'false');
    }
    async function showHistory() {
      close();
      const page = await api('GET', `/notifications?take=${opts.historyTake}`);
      fill(history.querySelector('.fp-list'), page.items, 'history');
      history.hidden = false;
    }
    async function markAllRead() {
      await api('POST', '/notifications/mark-all-read', {});
      state.items.forEach((item) => (item.isNew = false));
      setCount(0);
      renderMenu();
    }

    button.addEventListener('click', () => (panel.hidden ? open() : close()));
    $('.fp-mark-all').addEventListener('click', markAllRead);
    $('.fp-show-history').addEventListener('click', showHistory);
    $('.fp-close').addEventListener('click', () => (history.hidden = true));
    history.addEventListener('click', (event) => {
      if (event.target === history) history.hidden = true; // a click outside the box
    });
    function outside(event) {
      if (!element.contains(event.target)) close();
    }
    document.addEventListener('click', outside);

    // After a reconnect or a gap in the events, what we show may be stale.
    const offs = [on('*', 'reconnect', refresh), on('*', 'gap', refresh)];
    connect();
    setCount(0);
    const ready = refresh();
    return {
      element,
      ready,
      refresh,
      open,
      close,
      showHistory,
      markAllRead,
      get count() {
        return state.count;
      },
      destroy() {
        document.removeEventListener('new-notification-event', onInbox);
        document.removeEventListener('click', outside);
        offs.forEach((off) => off());
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
  };
  root.FlaskPush = FlaskPush;
})(typeof globalThis !== 'undefined' ? globalThis : self);
