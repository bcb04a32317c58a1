"""Signals of flask-push (blinker), for hosts, the live channel and tests.

Each comment names the sender and the keyword arguments.
"""

from __future__ import annotations

import logging
from inspect import iscoroutinefunction
from typing import Any

from blinker import NamedSignal, Namespace

log = logging.getLogger("flask_push")

_signals = Namespace()

#: A browser subscribed or re-subscribed. Sender: the app; ``subscription``, ``created``.
subscription_added = _signals.signal("subscription-added")
#: A subscription was deleted through the API. Sender: the app; ``subscription``.
subscription_removed = _signals.signal("subscription-removed")
#: An inbox item was created or updated and committed. Sender: the app; ``item``, ``created``.
inbox_item_saved = _signals.signal("inbox-item-saved")
#: Inbox items were marked read and committed. Sender: the app; ``user_id``, ``count``.
inbox_read = _signals.signal("inbox-read")
#: A message and its deliveries were committed to the outbox. Sender: the app; ``message``.
message_queued = _signals.signal("message-queued")
#: A push service accepted a push. Sender: the app; ``push`` (an OutgoingPush), ``result``.
delivery_succeeded = _signals.signal("delivery-succeeded")
#: A push was not accepted (gone, failed, or to be retried). Sender: the app; ``push``,
#: ``result`` (its ``status`` says which), ``will_retry``.
delivery_failed = _signals.signal("delivery-failed")
#: A push service said a subscription or installation is gone; it is now dead and never
#: sent to again. Sender: the app; ``kind`` ("subscription" or "installation"),
#: ``target_id``, ``reason``.
subscription_gone = _signals.signal("subscription-gone")
#: Sending is suppressed and a push was recorded instead (what ``push.record()``
#: collects). Sender: the app; ``push`` (an OutgoingPush), ``kind``.
push_recorded = _signals.signal("push-recorded")


def send_committed(signal: NamedSignal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal`` about a change that is already committed.

    Unlike ``signal.send``, a receiver that raises does not stop the others, and
    its error is logged instead of raised: the change happened, so the request
    (or ``push.send``) that made it must still succeed, or a client retrying it
    would make it twice.
    """
    if signal.is_muted:
        return
    for receiver in signal.receivers_for(sender):
        try:
            if iscoroutinefunction(receiver):
                raise RuntimeError("Cannot send to a coroutine function.")  # as blinker says
            receiver(sender, **kwargs)
        except Exception:
            log.exception(
                "flask-push: a receiver of the %r signal (%r) failed; the change it was told "
                "about is committed all the same",
                signal.name,
                receiver,
            )
