// flask-push as an ES module:
//   import FlaskPush, { subscribe, bell } from '/push/static/flask-push.mjs';
// It runs the plain script next to it (which sets globalThis.FlaskPush, once) and
// exports its functions, so a page may use both forms and share one client.
import './flask-push.js';

const FlaskPush = globalThis.FlaskPush;
// Served at <prefix>/static/flask-push.mjs: that says the prefix (a module's script
// has no document.currentScript), unless the page set one.
// (a copy in the app's own /static/ says nothing: the prefix is never the root)
const served = new URL(import.meta.url).pathname.match(/^(.+)\/static\/flask-push\.mjs$/);
if (served && FlaskPush.configure().prefix === '/push') FlaskPush.configure({ prefix: served[1] });
export default FlaskPush;
export const {
  configure,
  api,
  subscribe,
  unsubscribe,
  connect,
  disconnect,
  ping,
  on,
  leave,
  info,
  warning,
  error,
  registerTemplate,
  resolveTemplate,
  escape,
  bell,
  preferences,
} = FlaskPush;
