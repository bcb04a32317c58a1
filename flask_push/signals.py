"""Signals of flask-push (blinker), for hosts, the live channel and tests.

Each comment names the sender and the keyword arguments.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A browser subscribed or re-subscribed. Sender: the app; ``subscription``, ``created``.
subscription_added = _signals.signal("subscription-added")
#: A subscription was deleted through the API. Sender: the app; ``subscription``.
subscription_removed = _signals.signal("subscription-removed")
#: An inbox item was created or updated and committed. Sender: the app; ``item``, ``created``.
inbox_item_saved = _signals.signal("inbox-item-saved")
#: Inbox items were marked read and committed. Sender: the app; ``user_id``, ``count``.
inbox_read = _signals.signal("inbox-read")
