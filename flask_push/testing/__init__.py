"""Local push services that speak the real protocols, for offline end-to-end tests.

Each fake runs in a background thread on 127.0.0.1 and checks what it receives
as the real service would, so an app's own tests can send through the real
client libraries (pywebpush, pyfcm, aioapns) without any network.
"""
