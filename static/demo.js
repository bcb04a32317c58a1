/* FreshCart demo: the few bits of behaviour the server-rendered pages need.
 * Everything push-related goes through window.FlaskPush (flask-push's browser client).
 */
(function () {
  'use strict';
  const body = document.body;
  const FP = window.FlaskPush;
  const prefix = body.dataset.pushPrefix || '/push';
  const signedIn = Boolean(body.dataset.user);

  function toast(text, kind) {
    const box = document.getElementById('toasts');
    const note = document.createElement('div');
    note.className = 'toast' + (kind ? ' toast-' + kind : '');
    note.textContent = text;
    box.appendChild(note);
    setTimeout(() => note.classList.add('gone'), 4000);
    setTimeout(() => note.remove(), 4600);
  }

  async function api(method, path, data) {
    if (FP) return FP.api(method, path, data);
    const init = { method, credentials: 'same-origin', headers: {} };
    if (data !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(data);
    }
    const response = await fetch(prefix + path, init);
    const json = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) throw new Error((json && json.error && json.error.message) || response.statusText);
    return json;
  }

  if (FP) FP.configure({ prefix, serviceWorkerUrl: body.dataset.swUrl || '/push-sw.js' });

  // -- bell, live inbox ------------------------------------------------------------
  const bellElement = document.getElementById('bell');
  if (bellElement && signedIn && FP) {
    FP.bell(bellElement, { title: body.dataset.staff ? 'Staff inbox' : 'Notifications' });
    document.addEventListener('new-notification-event', (event) => {
      const { event: name, data } = event.detail;
      // the order page announces its own status changes; the rest gets a toast
      if (name === 'notification' && data && data.isNew && !data.progress &&
          !(data.url && data.url === location.pathname)) toast(data.title);
    });
  } else if (bellElement && signedIn) {
    bellElement.innerHTML = `<a class="bell-fallback" href="${bellElement.dataset.history}" aria-label="Notifications">🔔</a>`;
  }

  // -- enable notifications ---------------------------------------------------------
  function markEnabled(button) {
    button.textContent = 'Notifications on';
    button.disabled = true;
    button.classList.add('btn-done');
  }
  const enableButtons = document.querySelectorAll('[data-enable-notifications]');
  if (enableButtons.length && 'Notification' in window && Notification.permission === 'granted' &&
      localStorage.getItem('flask-push:subscription-id')) {
    enableButtons.forEach(markEnabled);
  }
  enableButtons.forEach((button) => {
    if (!('serviceWorker' in navigator && 'PushManager' in window)) {
      button.title = 'This browser does not support Web Push';
    }
    button.addEventListener('click', async () => {
      if (!FP) return toast('The push client did not load.', 'error');
      const label = button.textContent;
      button.disabled = true;
      button.textContent = 'Enabling…';
      try {
        // a browser that cannot reach its push service may never answer
        await Promise.race([
          FP.subscribe(),
          new Promise((resolve, reject) => setTimeout(
            () => reject(new Error("the browser's push service did not answer")), 20000)),
        ]);
        document.querySelectorAll('[data-enable-notifications]').forEach(markEnabled);
        toast('Notifications are on for this browser.');
      } catch (err) {
        button.disabled = false;
        button.textContent = label;
        toast(err.code === 'permission_denied'
          ? 'Notifications are blocked for this site in your browser settings.'
          : 'Could not enable notifications: ' + err.message, 'error');
      }
    });
  });

  // -- the order page's live timeline --------------------------------------------------
  const order = document.querySelector('[data-order]');
  if (order) {
    const live = order.querySelector('[data-live]');
    const statusBadge = order.querySelector('[data-order-status]');
    function setLive(text, on) {
      live.textContent = text;
      live.classList.toggle('on', Boolean(on));
    }
    function render(state) {
      statusBadge.textContent = state.label;
      statusBadge.className = 'status status-' + state.status;
      for (const step of state.timeline) {
        const li = order.querySelector(`[data-step="${step.status}"]`);
        if (!li) continue;
        li.classList.toggle('done', Boolean(step.at));
        li.classList.toggle('current', step.status === state.status);
        li.querySelector('[data-at]').textContent = step.at
          ? new Date(step.at).toLocaleString(undefined, { month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit' })
          : '';
      }
    }
    async function reload() {
      const response = await fetch(order.dataset.orderJson, { credentials: 'same-origin' });
      if (response.ok) render(await response.json());
    }
    if (FP) {
      const channel = 'order:' + order.dataset.order;
      FP.on(channel, 'status', (data) => {
        reload();
        const li = order.querySelector(`[data-step="${data.status}"]`);
        if (li) {
          li.classList.remove('flash-step');
          void li.offsetWidth;
          li.classList.add('flash-step');
        }
        toast('Order #' + data.orderId + ': ' + data.label);
      });
      FP.on(channel, 'gap', reload);
      FP.on(channel, 'subscribed', () => setLive('live', true));
      FP.on('*', 'close', () => setLive('reconnecting…', false));
      FP.on('*', 'reconnect', reload);
      FP.connect();
    } else {
      setLive('refreshing every 5 s', false);
      setInterval(reload, 5000);
    }
  }

  // -- login helpers -------------------------------------------------------------------
  document.querySelectorAll('[data-fill-login]').forEach((button) => {
    button.addEventListener('click', () => {
      document.querySelector('input[name=email]').value = button.dataset.fillLogin;
      document.querySelector('input[name=password]').value = 'demo1234';
      document.querySelector('input[name=password]').form.requestSubmit();
    });
  });

  // -- simulated phones ------------------------------------------------------------------
  function randomHex(bytes) {
    const raw = crypto.getRandomValues(new Uint8Array(bytes));
    return Array.from(raw, (b) => b.toString(16).padStart(2, '0')).join('');
  }
  function randomToken() {
    // the shape of a Firebase registration token: <instance id>:APA91b<base64url>
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const pick = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => alphabet[b % 64]).join('');
    return pick(22) + ':APA91b' + pick(134);
  }
  document.querySelectorAll('[data-register-device]').forEach((button) => {
    button.addEventListener('click', async () => {
      const deviceType = button.dataset.registerDevice;
      button.disabled = true;
      try {
        await api('POST', '/installations', {
          appId: button.dataset.appId,
          deviceType,
          deviceToken: deviceType === 'ios' ? randomHex(32) : randomToken(),
          appVersion: '2.4.0',
          timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone,
          subscriptions: ['offers'],
        });
        location.reload();
      } catch (err) {
        button.disabled = false;
        toast('Could not register the device: ' + err.message, 'error');
      }
    });
  });
  const received = document.querySelector('[data-received]');
  if (received) {
    const escape = (text) => { const d = document.createElement('div'); d.textContent = text || ''; return d.innerHTML; };
    setInterval(async () => {
      const response = await fetch(received.dataset.url, { credentials: 'same-origin' });
      if (!response.ok) return;
      const rows = await response.json();
      document.querySelector('[data-received-count]').textContent = rows.length;
      if (!rows.length) return;
      received.innerHTML = rows.map((r) =>
        `<li class="phone-note"><span class="device device-${r.service === 'FCM' ? 'android' : 'ios'}">${r.service}</span>` +
        `<div class="grow"><strong>${escape(r.title)}</strong><div>${escape(r.body)}</div></div></li>`).join('');
    }, 3000);
  }

  // -- staff: messages with delivery analytics ---------------------------------------------
  const STATUSES = ['queued', 'sent', 'failed', 'gone', 'expired', 'clicked'];
  const messages = document.querySelector('[data-messages]');
  async function loadMessages() {
    try {
      const page = await api('GET', '/messages?take=25');
      const items = page.items || page.messages || [];
      if (!items.length) {
        messages.innerHTML = '<p class="muted">No messages yet.</p>';
        return;
      }
      const escape = (text) => { const d = document.createElement('div'); d.textContent = text || ''; return d.innerHTML; };
      // the chart: every status summed over the messages listed
      const totals = Object.fromEntries(STATUSES.map((s) => [s, 0]));
      items.forEach((m) => STATUSES.forEach((s) => { totals[s] += (m.counts || {})[s] || 0; }));
      const top = Math.max(1, ...Object.values(totals));
      const chart = `<div class="chart" role="img" aria-label="Deliveries by status">` +
        STATUSES.map((s) => `<div class="col"><span>${totals[s]}</span><i class="sw-${s}" style="height:${(100 * totals[s]) / top}%"></i></div>`).join('') +
        `</div><div class="chart-labels">${STATUSES.map((s) => `<span>${s}</span>`).join('')}</div>`;
      messages.innerHTML = chart + items.map((m) => {
        const counts = m.counts || {};
        const total = Math.max(1, m.recipientCount || 0);
        const segments = ['sent', 'failed', 'gone', 'expired', 'queued']
          .map((s) => `<i class="sw-${s}" style="width:${(100 * (counts[s] || 0)) / total}%" title="${s}: ${counts[s] || 0}"></i>`).join('');
        const numbers = STATUSES.map((s) => `<span><b>${counts[s] || 0}</b> ${s}</span>`).join('');
        const n = m.notification || {};
        return `<article class="message" data-message="${m.id}"><div class="row-between"><strong>${escape(n.title)}</strong>` +
          `<span class="muted small">${new Date(m.createdAt).toLocaleString()}</span></div>` +
          `<div class="muted small">${n.body ? escape(n.body) + ' · ' : ''}${m.recipientCount === 1 ? '1 browser or device' : m.recipientCount + ' browsers and devices'}</div>` +
          `<div class="stacked">${segments}</div><div class="counts">${numbers}</div></article>`;
      }).join('');
    } catch (err) {
      messages.innerHTML = `<p class="flash flash-error">Could not load messages: ${err.message}</p>`;
    }
  }
  if (messages) {
    loadMessages();
    setInterval(loadMessages, 5000);
    document.querySelector('[data-refresh-messages]').addEventListener('click', loadMessages);
  }
  const audienceForm = document.querySelector('[data-audience-form]');
  if (audienceForm) {
    const emails = audienceForm.querySelector('[data-emails]');
    const sync = () => { emails.hidden = audienceForm.audience.value !== 'emails'; };
    audienceForm.addEventListener('change', sync);
    sync();
  }

  // -- staff: providers ----------------------------------------------------------------------
  const providers = document.querySelector('[data-providers]');
  if (providers) {
    api('GET', '/providers').then((page) => {
      const items = Array.isArray(page) ? page : page.items || page.providers || [];
      if (!items.length) {
        providers.innerHTML = '<p class="muted">None stored: this demo configures its providers in the app config (above). Providers stored here, per app id, override it.</p>';
        return;
      }
      providers.innerHTML = '<div class="table-wrap"><table><thead><tr><th>App id</th><th>Kind</th><th>Secrets set</th></tr></thead><tbody>' +
        items.map((p) => `<tr><td><code>${p.appId}</code></td><td>${p.kind}</td><td>${(p.secretsSet || []).join(', ')}</td></tr>`).join('') +
        '</tbody></table></div>';
    }).catch((err) => { providers.innerHTML = `<p class="flash flash-error">${err.message}</p>`; });
  }
})();
