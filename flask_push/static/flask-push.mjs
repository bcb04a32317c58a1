// flask-push as an ES module:
//   import FlaskPush, { subscribe, bell } from '/push/static/flask-push.mjs';
// It runs the plain script next to it (which sets globalThis.FlaskPush, once) and
// exports its functions, so a page may use both forms and share one client.
import './flask-push.js';

const FlaskPush = globalThis.FlaskPush;
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
