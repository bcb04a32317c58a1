/* FreshCart demo: the few bits of behaviour the server-rendered pages need.
 * Everything push-related goes through window.FlaskPush (flask-push's browser client).
 */
(function () {
  'use strict';
  const body = document.body;
  const FP = window.FlaskPush;
  const prefix = body.dataset.pushPrefix || '/push';
  const signedIn = Boolean(body.dataset.user);

  // A time as the server writes it (views.when: "Dec 03, 17:40 UTC"), so a time
  // updated live reads like the ones the page came with.
  const TIME = new Intl.DateTimeFormat('en-US', {
    month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit',
    hourCycle: 'h23', timeZone: 'UTC',
  });
  function when(iso) {
    return `${TIME.format(new Date(iso))} UTC`;
  }

  // Text as HTML shows it, in an element or an attribute's quotes: whatever the
  // server stored (an app id, a title) is text.
  function escape(text) {
    const holder = document.createElement('div');
    holder.textContent = text == null ? '' : String(text);
    return holder.innerHTML.replaceAll('"', '&quot;').replaceAll("'", '&#39;');
  }

  // Toasts live in the sticky header, below its row: they push the page down instead
  // of covering its buttons, and stay in sight when the page scrolls. An error stays
  // longer; any toast goes away when tapped.
  const MAX_TOASTS = 3;
  function toast(text, kind) {
    const box = document.getElementById('toasts');
    const note = document.createElement('div');
    note.className = 'toast' + (kind ? ' toast-' + kind : '');
    note.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    const words = document.createElement('span');
    words.textContent = text;
    words.dir = 'auto'; // a title in Hebrew or Arabic reads right to left
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'toast-close';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '×';
    note.append(words, close);
    const dismiss = () => {
      note.classList.add('gone');
      setTimeout(() => note.remove(), 300);
    };
    note.addEventListener('click', dismiss);
    box.appendChild(note);
    while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
    setTimeout(dismiss, kind === 'error' ? 10000 : 5000);
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

  // the prefix only: the service worker's address and scope the client asks of the
  // app, which answers them below its mount point (/shop/push-sw.js at /shop)
  if (FP) FP.configure({ prefix });

  // -- bell, live inbox ------------------------------------------------------------
  const bellElement = document.getElementById('bell');
  if (bellElement && signedIn && FP) {
    // the bell's "Notification settings" opens the shop's own settings page; staff
    // have none: their inbox (new orders, exports) has no category, and the
    // categories are the shoppers' choices
    FP.bell(bellElement, {
      title: body.dataset.staff ? 'Staff inbox' : 'Notifications',
      preferencesUrl: body.dataset.staff ? false : bellElement.dataset.settings,
      // each type named as the Notifications page and the settings name it
      typeLabels: JSON.parse(body.dataset.typeLabels || '{}'),
    });
    document.addEventListener('new-notification-event', (event) => {
      const { event: name, data } = event.detail;
      // the order page announces its own status changes; the rest gets a toast. An
      // order's state comes as an 'activity' event (its inbox item, updated in place
      // with its progress, is not announced again), an export's progress not at all.
      const elsewhere = data && !(data.url && data.url === location.pathname);
      if (name === 'notification' && elsewhere && data.isNew && !data.progress) toast(data.title);
      if (name === 'activity' && elsewhere) toast(data.title);
    });
  } else if (bellElement && signedIn) {
    bellElement.innerHTML = `<a class="bell-fallback" href="${bellElement.dataset.history}" aria-label="Notifications">🔔</a>`;
  }

  // -- pages drawn from what the bell gets, as it changes ------------------------------
  // The notifications page lists what the bell shows (a new one arrives, or the bell
  // marks some read); the staff's orders board gets each new order, which comes to
  // their bell. The server draws the part again, once for a burst of events.
  const followsInbox = document.querySelector('[data-follows-inbox]');
  if (followsInbox && FP) {
    let queued = null;
    const redraw = () => {
      clearTimeout(queued);
      queued = setTimeout(async () => {
        const response = await fetch(location.href, { credentials: 'same-origin' }).catch(() => null);
        if (!response || !response.ok || response.redirected) return; // as it is until then
        const page = new DOMParser().parseFromString(await response.text(), 'text/html');
        const fresh = page.querySelector('[data-follows-inbox]');
        if (!fresh || fresh.innerHTML === followsInbox.innerHTML) return;
        // the keyboard stays where it was (an order's button, say): drawn again, the
        // element is found by its form's action or its link
        const focused = followsInbox.contains(document.activeElement) ? document.activeElement : null;
        const form = focused && focused.closest('form');
        const key = !focused ? null
          : form ? `form[action="${CSS.escape(form.getAttribute('action') || '')}"] ${focused.tagName}`
          : focused.getAttribute('href') ? `a[href="${CSS.escape(focused.getAttribute('href'))}"]` : null;
        followsInbox.innerHTML = fresh.innerHTML;
        const again = key && followsInbox.querySelector(key);
        if (again) again.focus();
      }, 150);
    };
    document.addEventListener('new-notification-event', redraw);
    FP.on('*', 'reconnect', redraw);
  }

  // -- what scrolls sideways on a phone: the tabs, the staff's tables -----------------
  // A faded edge shows there is more; the current tab is scrolled into view.
  for (const strip of document.querySelectorAll('.mainnav, .table-wrap')) {
    const edges = () => {
      const more = strip.scrollWidth - strip.clientWidth;
      strip.classList.toggle('more-before', strip.scrollLeft > 1);
      strip.classList.toggle('more-after', more - strip.scrollLeft > 1);
    };
    const active = strip.querySelector('a.active');
    if (active && strip.scrollWidth > strip.clientWidth) {
      const box = active.getBoundingClientRect();
      const frame = strip.getBoundingClientRect();
      strip.scrollLeft += box.left - frame.left - (frame.width - box.width) / 2;
    }
    edges();
    strip.addEventListener('scroll', edges, { passive: true });
    window.addEventListener('resize', edges);
  }

  // -- enable notifications ---------------------------------------------------------
  const PUSH_SERVICE_WAIT_MS = 5000;
  const ENABLE_ERRORS = {
    permission_denied: 'Notifications are blocked for this site in your browser settings.',
    permission_dismissed: 'Notifications stay off: the browser did not get your permission.',
    unreachable: "Your browser's push service could not be reached. Notifications stay off.",
    unsupported:
      'This browser cannot receive push notifications here (a private window has none). ' +
      'Notifications stay off.',
  };
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  function enabled() {
    document.querySelectorAll('[data-enable-notifications]').forEach(markEnabled);
    toast('Notifications are on for this browser.');
  }
  function markEnabled(button) {
    button.textContent = 'Notifications on';
    button.disabled = true;
    button.classList.add('btn-done');
  }
  const enableButtons = document.querySelectorAll('[data-enable-notifications]');
  if (enableButtons.length && 'Notification' in window && 'serviceWorker' in navigator &&
      Notification.permission === 'granted' && localStorage.getItem('flask-push:subscription-id')) {
    // ...and while the browser still has the subscription: Chrome ends it when the
    // site's notifications are blocked, and does not bring it back when they are
    // allowed again, so then nothing arrives until she turns them on again
    navigator.serviceWorker.getRegistration()
      .then((registration) => registration && registration.pushManager.getSubscription())
      .then((subscription) => subscription && enableButtons.forEach(markEnabled))
      .catch(() => {}); // no answer: the button stays, and turning them on works
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
        // Ask first, untimed: a person may take a while to answer the prompt.
        const permission = 'Notification' in window ? await Notification.requestPermission() : 'granted';
        if (permission !== 'granted') {
          const code = permission === 'denied' ? 'permission_denied' : 'permission_dismissed';
          throw Object.assign(new Error('not allowed'), { code });
        }
        // A browser whose push service cannot be reached never settles subscribe():
        // give up after a few seconds, and say so.
        const subscribing = FP.subscribe();
        const answered = await Promise.race([subscribing, wait(PUSH_SERVICE_WAIT_MS)]);
        if (answered === undefined) {
          subscribing.then(() => enabled()).catch(() => {}); // if it answers later after all
          throw Object.assign(new Error('no answer'), { code: 'unreachable' });
        }
        enabled();
      } catch (err) {
        button.disabled = false;
        button.textContent = label;
        toast(ENABLE_ERRORS[err.code] || 'Could not enable notifications: ' + err.message, 'error');
      }
    });
  });

  // -- signed out in another tab: this one was hers too ----------------------------------
  // A tab's live events are the user's its socket opened as: signed out in one tab, the
  // others kept showing hers (a toast, the bell) on a shared browser. A page that loads
  // signed out says so to the others (the session cookie is this browser's), and those
  // that still show someone stop their live events and load again, signed out.
  if ('BroadcastChannel' in window) {
    const session = new BroadcastChannel('freshcart-session');
    if (!signedIn) {
      session.postMessage('signed-out');
    } else {
      session.addEventListener('message', (event) => {
        if (event.data !== 'signed-out') return;
        if (FP) FP.disconnect();
        window.location.reload();
      });
    }
  }

  // -- sign out: this browser's notifications were the shopper's -------------------------
  // A browser may be shared: left on, her pushes (her order, her address) would keep
  // showing here, and the next shopper to sign in would be told notifications are on
  // for him. Sign-out ends them first; if that fails, or the server has not answered
  // within a few seconds, she is signed out all the same.
  const signOut = document.querySelector('.topbar form.who');
  if (signOut && FP) {
    signOut.addEventListener('submit', (event) => {
      if (!localStorage.getItem('flask-push:subscription-id')) return; // none to end
      event.preventDefault();
      signOut.querySelector('button').disabled = true;
      const ended = FP.unsubscribe().catch((err) =>
        console.error('flask-push: notifications not turned off:', err)
      );
      const waited = new Promise((resolve) => setTimeout(resolve, 4000));
      // submit() fires no second submit event
      Promise.race([ended, waited]).then(() => signOut.submit());
    });
  }

  // -- the order page's live timeline --------------------------------------------------
  const order = document.querySelector('[data-order]');
  if (order) {
    const live = order.querySelector('[data-live]');
    const statusBadge = order.querySelector('[data-order-status]');
    function setLive(text, on) {
      live.textContent = text;
      live.classList.toggle('on', Boolean(on));
    }
    // The last step ends the order: "Enable notifications" for its next steps (or the
    // staff's "Advance status") would offer what can no longer come, as the page does
    // not when it is loaded then.
    const steps = order.querySelectorAll('[data-step]');
    const lastStep = steps.length ? steps[steps.length - 1].dataset.step : null;
    function closeWhenDone(status) {
      if (status !== lastStep) return;
      order.querySelectorAll('[data-while-open]').forEach((element) => { element.hidden = true; });
    }
    function render(state) {
      statusBadge.textContent = state.label;
      statusBadge.className = 'status status-' + state.status;
      closeWhenDone(state.status);
      for (const step of state.timeline) {
        const li = order.querySelector(`[data-step="${step.status}"]`);
        if (!li) continue;
        li.classList.toggle('done', Boolean(step.at));
        li.classList.toggle('current', step.status === state.status);
        li.querySelector('[data-at]').textContent = step.at ? when(step.at) : '';
      }
    }
    async function reload() {
      const response = await fetch(order.dataset.orderJson, { credentials: 'same-origin' });
      // signed out meanwhile (in another tab, say): the answer is the sign-in page, and
      // the live connection no longer gets her order's changes
      if (response.redirected) setLive('signed out: sign in to follow it live', false);
      else if (response.ok) render(await response.json());
    }
    if (FP) {
      // the order's live activity (push.activity in demo/notify.py): each new state
      const channel = 'activity:order-' + order.dataset.order;
      let shownStamp = 0;
      FP.on(channel, 'activity', (data) => {
        // two states saved at once may be announced in either order: a state older
        // than the one shown is not shown over it
        if (data.timestamp < shownStamp) return;
        shownStamp = data.timestamp;
        const status = (data.state || {}).status;
        const li = status && order.querySelector(`[data-step="${status}"]`);
        if (li) {
          statusBadge.textContent = li.querySelector('strong').textContent;
          statusBadge.className = 'status status-' + status;
          closeWhenDone(status);
          li.classList.remove('flash-step');
          void li.offsetWidth;
          li.classList.add('flash-step');
        }
        reload(); // the timeline's times
        toast(data.title);
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

  // -- notification settings: a shopper without a time zone gets her browser's ------------
  // (not over her own choice of none, which the page marks as refused)
  const zoneSelect = document.querySelector('select[data-browser-zone]:not([aria-invalid=true])');
  if (zoneSelect && !zoneSelect.value) {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && [...zoneSelect.options].some((o) => o.value === zone)) zoneSelect.value = zone;
  }

  // -- quiet hours: the times wait while "No quiet hours" is chosen ------------------------
  // Disabled, so Tab skips them and a click cannot change what would not be used (the
  // CSS dims them). Without JavaScript they stay usable, and the server ignores them
  // with "No quiet hours"; disabled fields are not sent, which it does not need then.
  const noQuietHours = document.querySelector('input[name=quiet][value=off]');
  if (noQuietHours) {
    const times = noQuietHours.form.querySelectorAll('.quiet-times input, .quiet-times select');
    const wait = () => times.forEach((field) => (field.disabled = noQuietHours.checked));
    noQuietHours.form
      .querySelectorAll('input[name=quiet]')
      .forEach((radio) => radio.addEventListener('change', wait));
    wait();
    // back to the page: the browser may restore the choice after the script has run
    window.addEventListener('pageshow', wait);
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
  // Live Activity and push-to-start tokens are APNs tokens, longer than a device's
  const LIVE_TOKEN_BYTES = 80;
  document.querySelectorAll('[data-register-device]').forEach((button) => {
    button.disabled = false; // the page shows it disabled until this script runs
    button.addEventListener('click', async () => {
      const deviceType = button.dataset.registerDevice;
      button.disabled = true;
      try {
        await api('POST', '/installations', Object.assign({
          appId: button.dataset.appId,
          deviceType,
          deviceToken: deviceType === 'ios' ? randomHex(32) : randomToken(),
          appVersion: '2.4.0',
          timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone,
          subscriptions: ['offers'],
        }, deviceType === 'ios' ? { pushToStartToken: randomHex(LIVE_TOKEN_BYTES) } : {}));
        location.reload();
      } catch (err) {
        button.disabled = false;
        toast('Could not register the device: ' + err.message, 'error');
      }
    });
  });

  // The simulated iPhone app does what ActivityKit has an app do: it reports its
  // push-to-start token (an iPhone added before the demo had Live Activities gets one
  // now), and once a push-to-start has started an order's Live Activity, it registers
  // that activity's own push token, so that the order's next states reach it.
  const phones = document.querySelector('[data-phones]');
  if (phones) {
    const received = phones.querySelector('[data-received]');
    const screens = phones.querySelector('[data-screens]');
    let drawn = null;
    const registering = new Set();
    async function registerActivity(want) {
      const key = want.installation + ' ' + want.activityId;
      if (registering.has(key)) return;
      registering.add(key);
      try {
        await api('POST', `/installations/${encodeURIComponent(want.installation)}/activities`, {
          activityId: want.activityId,
          pushToken: randomHex(LIVE_TOKEN_BYTES),
        });
      } catch (err) {
        registering.delete(key); // tried again at the next refresh
        toast('The iPhone could not register its Live Activity: ' + err.message, 'error');
      }
    }
    async function refreshPhones() {
      const response = await fetch(phones.dataset.url, { credentials: 'same-origin' });
      if (!response.ok) return;
      const page = await response.json();
      if (page.screens !== drawn) {
        screens.innerHTML = page.screens; // each phone's screen, as the server draws it
        drawn = page.screens;
      }
      page.register.forEach(registerActivity);
      const rows = page.received;
      phones.querySelector('[data-received-count]').textContent = rows.length;
      if (!rows.length) return;
      received.innerHTML = rows.map((r) =>
        `<li class="phone-note"><span class="device device-${r.service === 'FCM' ? 'android' : 'ios'}">${r.service}</span>` +
        `<div class="grow"><strong>${escape(r.title)}</strong><div>${escape(r.body)}</div>` +
        (r.kind ? `<div class="muted small">${escape(r.kind)}</div>` : '') + '</div></li>').join('');
    }
    const updates = [...phones.querySelectorAll('[data-ios-installation]')]
      .filter((row) => !row.dataset.pushToStart)
      .map((row) => api('PATCH', '/installations/' + encodeURIComponent(row.dataset.iosInstallation),
        { pushToStartToken: randomHex(LIVE_TOKEN_BYTES) }).then(() => true, () => false));
    Promise.all(updates).then((done) => (done.some(Boolean) ? location.reload() : refreshPhones()));
    setInterval(refreshPhones, 2000);
  }

  // -- staff: messages with delivery analytics ---------------------------------------------
  // the inbox items a message wrote count beside its deliveries to browsers and phones;
  // suppressed: the shoppers' settings (or the daily cap) held a push back; superseded:
  // an order's newer state went out instead of this one, still queued; deferred:
  // queued until the shopper's quiet hours end; cancelled: stopped in the operator
  // console before it was sent
  const STATUSES = ['inbox', 'queued', 'sent', 'failed', 'gone', 'expired', 'suppressed', 'superseded', 'cancelled', 'deferred', 'clicked'];
  // the chart leaves deferred out (those are a part of queued), and superseded and
  // cancelled (rare: each message's own numbers and bar show them)
  const CHARTED = STATUSES.filter((s) => !['deferred', 'superseded', 'cancelled'].includes(s));
  const messages = document.querySelector('[data-messages]');
  const categoryLabels = messages ? JSON.parse(messages.dataset.categories || '{}') : {};
  const offByDefault = messages ? JSON.parse(messages.dataset.offByDefault || '[]') : [];
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  // what a message reached, and why not more, from its own counts (flask-push's, and
  // the inbox items the demo's inbox.json counts): no policy is worked out again here
  function reachOf(m) {
    const counts = m.counts;
    const held = m.heldBack || 0; // shoppers whose settings kept the item from their inbox
    const suppressed = counts.suppressed || 0; // pushes: the settings, or the daily cap
    const deferred = counts.deferred || 0;
    const parts = [plural(counts.inbox, 'inbox', 'inboxes')];
    if (held) {
      const label = categoryLabels[m.category] || m.category;
      parts.push(`held back for ${plural(held, 'shopper', 'shoppers')} by their notification settings` +
        (offByDefault.includes(m.category) ? ` (${label} is off unless they turn it on)` : ''));
    }
    if (m.recipientCount) {
      parts.push(plural(m.recipientCount, 'browser or phone', 'browsers and phones') +
        (deferred ? `, ${deferred} waiting for quiet hours` : ''));
    } else if (suppressed) {
      parts.push('no browser or phone gets it');
    } else if (!held || counts.inbox) {
      // a message the settings held back from everyone is not waiting on a device
      parts.push('no browsers or phones registered');
    }
    if (suppressed) parts.push(`${plural(suppressed, 'push', 'pushes')} held back`);
    return parts.join(' · ');
  }
  async function inboxCounts(items) {
    const query = items.map((m) => 'id=' + encodeURIComponent(m.id)).join('&');
    const response = await fetch(messages.dataset.inboxUrl + '?' + query, { credentials: 'same-origin' });
    if (!response.ok) throw new Error('inbox counts: ' + response.statusText);
    return response.json();
  }
  async function loadMessages() {
    try {
      const page = await api('GET', '/messages?take=25');
      const items = page.items || page.messages || [];
      if (!items.length) {
        // the page's own sentence (staff/messages.html): what comes here, and how
        const empty = document.createElement('p');
        empty.className = 'muted';
        empty.textContent = messages.dataset.empty || 'No messages yet.';
        messages.replaceChildren(empty);
        return;
      }
      const inboxes = await inboxCounts(items);
      items.forEach((m) => {
        const written = inboxes[m.id] || {};
        m.counts = { ...(m.counts || {}), inbox: written.inbox || 0 };
        m.heldBack = written.heldBack || 0;
        m.inboxItem = written.item || m.id;
      });
        // the chart: every status summed over the messages listed
      const totals = Object.fromEntries(CHARTED.map((s) => [s, 0]));
      items.forEach((m) => CHARTED.forEach((s) => { totals[s] += m.counts[s] || 0; }));
      // but each inbox item once: an order's states update one item, each saying "1 inbox"
      const perItem = new Map(items.map((m) => [m.inboxItem, m.counts.inbox || 0]));
      totals.inbox = [...perItem.values()].reduce((sum, n) => sum + n, 0);
      const top = Math.max(1, ...Object.values(totals));
      const chart = `<div class="chart" role="img" aria-label="Deliveries by status">` +
        CHARTED.map((s) => `<div class="col"><span>${totals[s]}</span><i class="sw-${s}" style="height:${(100 * totals[s]) / top}%"></i></div>`).join('') +
        `</div><div class="chart-labels">${CHARTED.map((s) => `<span>${s}</span>`).join('')}</div>`;
      messages.innerHTML = chart + items.map((m) => {
        const counts = m.counts || {};
        // the bar: every browser and phone the message was for, held back ones too
        const total = Math.max(1, (m.recipientCount || 0) + (counts.suppressed || 0));
        const segments = ['sent', 'failed', 'gone', 'expired', 'queued', 'superseded', 'cancelled', 'suppressed']
          .map((s) => `<i class="sw-${s}" style="width:${(100 * (counts[s] || 0)) / total}%" title="${s}: ${counts[s] || 0}"></i>`).join('');
        const numbers = STATUSES.map((s) => `<span><b>${counts[s] || 0}</b> ${s}</span>`).join('');
        const n = m.notification || {};
        const reached = escape(reachOf(m));
        const category = m.category
          ? `<span class="category-tag" data-category="${escape(m.category)}">${escape(categoryLabels[m.category] || m.category)}</span>`
          : '<span class="category-tag none" data-category="">no category</span>';
        // what became of each browser and phone, and why: the operator console says
        const undelivered = (counts.failed || 0) + (counts.gone || 0) + (counts.expired || 0);
        const why = `<a class="small" data-why href="${prefix}/console/messages/${encodeURIComponent(m.id)}">` +
          `${undelivered ? `Why ${plural(undelivered, 'push', 'pushes')} did not arrive` : 'Each browser and phone'} (console)</a>`;
        return `<article class="message" data-message="${m.id}"><div class="row-between"><strong>${escape(n.title)}</strong>` +
          `<span class="muted small">${when(m.createdAt)}</span></div>` +
          `<div class="message-meta">${category}</div>` +
          `<div class="muted small">${n.body ? escape(n.body) + ' · ' : ''}<span data-reached>${reached}</span></div>` +
          `<div class="stacked">${segments}</div><div class="counts">${numbers}</div>${why}</article>`;
      }).join('');
    } catch (err) {
      messages.innerHTML = `<p class="flash flash-error">Could not load messages: ${escape(err.message)}</p>`;
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

  // -- notifications page: an item opened from it is read, as one opened from the bell ------
  document.addEventListener('click', async (event) => {
    const link = event.target.closest('.inbox-item.new a[href]');
    if (!link) return;
    const path = `/notifications/${encodeURIComponent(link.closest('[data-item]').dataset.item)}/read`;
    const read = api('POST', path, {}).catch((err) => {
      console.warn('FreshCart: could not mark the notification read:', err.message); // eslint-disable-line no-console
    });
    // opened in another tab or window: this page stays, and the request ends here
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    // leaving at once could cancel the request: the bell waits for it too
    event.preventDefault();
    await read;
    window.location.assign(link.href);
  });

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
        items.map((p) => `<tr><td><code>${escape(p.appId)}</code></td><td>${escape(p.kind)}</td>` +
          `<td>${escape((p.secretsSet || []).join(', '))}</td></tr>`).join('') +
        '</tbody></table></div>';
    }).catch((err) => { providers.innerHTML = `<p class="flash flash-error">${escape(err.message)}</p>`; });
  }
})();
