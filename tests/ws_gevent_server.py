"""``ws_server.py``'s app under gevent's WSGI server, monkey-patched as gunicorn's
gevent worker runs it: sockets that never block, so one ``send`` writes only what
fits in the socket's buffer. The buffers are small (the accepted sockets inherit
the listener's), so that a client that reads slowly fills them soon.

``python ws_gevent_server.py <backplane url> <prefix> <sqlite path>`` prints
``port <n>`` once it listens.
"""

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402
from ws_server import create_app  # noqa: E402

if __name__ == "__main__":
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = WSGIServer(listener, create_app(*sys.argv[1:4]), log=None)
    server.start()
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()
