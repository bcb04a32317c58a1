"""The words of a delivery's story, written once: its statuses, the kinds of event
in its timeline, and the machine reasons with the sentence each one reads as.

The dispatcher, ``push.cancel``/``push.retry_failed``, the API's counts and
schemas, the CLI and the console all take their words from here. The next
rules (:mod:`flask_push.policy`) add their reasons to :data:`REASONS`: nothing
else lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final, Literal, get_args

#: every status a delivery has, in the order they are shown. ``queued`` is the
#: only one that is not final; ``cancelled`` may still turn into the outcome of
#: a push that was already on the network when the message was cancelled.
DeliveryStatus = Literal[
    "queued", "sent", "failed", "gone", "expired", "suppressed", "superseded", "cancelled"
]
STATUSES: Final[tuple[str, ...]] = get_args(DeliveryStatus)
#: statuses that end a delivery without it arriving
UNDELIVERED: Final[tuple[str, ...]] = ("failed", "gone", "expired")

#: the kinds of event in a delivery's timeline (``events[].what``)
EventKind = Literal[
    "queued",
    "deferred",
    "attempt",
    "retry",
    "sent",
    "gone",
    "failed",
    "expired",
    "clicked",
    "cancelled",
    "suppressed",
    "superseded",
]
EVENTS: Final[tuple[str, ...]] = get_args(EventKind)
#: the kinds that say what happened to the delivery (not an attempt's answer nor a
#: click): the last one of them explains its status
TELLING: Final[frozenset[str]] = frozenset(EVENTS) - {"attempt", "clicked"}

#: machine reason -> the sentence it reads as. Placeholders: ``{service}`` (who
#: answered, "the browser's push service"), ``{answer}`` (what it answered, such
#: as "410 Gone", or why no answer came), ``{at}`` and ``{next}`` (times),
#: ``{attempts}``, ``{kind}``, ``{target}`` ("subscription" or "installation"),
#: ``{service_id}``, ``{how}`` (the settings that turn a provider on); ``{Last}``:
#: what the last attempt found (an answer, or none); ``{asked}``: the wait the
#: service's ``Retry-After`` asked for (``retry_after``, seconds); ``{category}`` (its label),
#: ``{channel}`` and ``{cap}``, for the policy's; ``{token}``: which of a device's
#: tokens (a Live Activity's own, or its push-to-start one); ``{ttl}``, ``{worker}`` and
#: ``{where}``, made from ``ttl`` (seconds) and ``worker`` (the process) when given;
#: ``{limit}`` and ``{shorten}``, for ``too_large``, made by :func:`too_large_values`;
#: ``{user}``: the user a push was for.
REASONS: Final[dict[str, str]] = {
    "accepted": "{Service} accepted it at {at}{service_id}.",
    "recorded": (
        "Recorded at {at}, not sent: sending is suppressed (PUSH_SUPPRESS_SEND, on by "
        "default under TESTING); push.record() shows it."
    ),
    "unsubscribed": (
        "{Service} answered {answer} at {at}: this {target} is dead and will not be used again."
    ),
    "rejected": ("{Service} refused it at {at} ({answer}); it will not be tried again as it is."),
    # a push service's "too large" (Web Push's 413, APNs' 413 PayloadTooLarge, FCM's
    # 400 "message is too big"): flask-push sent no more than the provider's
    # max_payload, so that service takes less (or counts more)
    "too_large": (
        "{Service} refused it as too large at {at} ({answer}): it takes less than the "
        "{limit} flask-push allows. Shorten {shorten}, or move data to your server; it "
        "will not be tried again as it is."
    ),
    "credentials_refused": (
        "{Service} refused flask-push's credentials at {at} ({answer}); it will not be "
        "tried again as it is."
    ),
    "address_blocked": (
        "flask-push did not connect at {at}: {answer}. It will not be tried again as it is."
    ),
    "unsendable": (
        "flask-push could not send it at {at}: {answer}. It will not be tried again as it is."
    ),
    "unavailable": (
        "{Service} answered {answer} at {at}; it will be tried again at {next}{asked}."
    ),
    # a 429: the service is up, and slowing this sender down (FCM's quota, APNs'
    # pushes to one device, a browser vendor's rate): a different fix than an outage
    "rate_limited": (
        "{Service} answered {answer} at {at}: it takes pushes from this sender more "
        "slowly for now; it will be tried again at {next}{asked}."
    ),
    "unreachable": (
        "flask-push could not reach {service} at {at}: {answer}. It will be tried again at {next}."
    ),
    "no_answer": (
        "flask-push got no answer it could read from {service} at {at}: {answer}. The push "
        "may have arrived all the same (a retry then shows it twice); it will be tried "
        "again at {next}."
    ),
    "gave_up": (
        "{Last}; flask-push gave up after {attempts} attempts: once {service} takes pushes "
        "again, retry what failed."
    ),
    "no_outcome": (
        "flask-push gave up on it at {at}, at its claim number {attempts}: the last "
        "claims before it ended with no outcome written (the worker holding it stopped "
        "or failed first, or the database was unreachable: the log says why)."
    ),
    "stalled": (
        "{Service} had not answered other pushes for a while at {at}, so this one was held "
        "back before it was sent; it is due again at {next}."
    ),
    "retry_past_ttl": (
        "{Last}; its time to live ends at {next}, before a next try could come, so it is "
        "not tried again."
    ),
    "ttl_expired": (
        "Its time to live{ttl} ran out at {at} before it could be sent: no worker sent it "
        "in time (none was running, the outbox was behind, or earlier tries used it up)."
    ),
    "target_dead": ("Its {target} was already dead or deleted at {at}, so it was not sent."),
    "target_changed_hands": (
        "By {at} its {target} had been registered again for someone else (another user, "
        "or no one, signed in on that browser or device), so it was not sent: it was not "
        "theirs to see."
    ),
    "target_gone": (
        "{Service} said at {at} that this {target} is gone: {answer}. It is never used again."
    ),
    "no_provider": (
        "No {kind} provider is configured{worker}, so it could not be sent: set {how}{where}, "
        "or store one for its app (POST /providers), then retry what failed."
    ),
    "provider_unusable": (
        "The {kind} provider stored for its app cannot send ({answer}), so it was not sent."
    ),
    "live_token_dead": (
        "{Service} answered {answer} at {at}: the {token} is dead (the Live Activity "
        "ended on the device, or the app was reinstalled), so flask-push forgot it; this "
        "state goes to the device again at once, as an ordinary alert."
    ),
    "message_deleted": "Its message was deleted before it was sent.",
    "cancelled": "An operator cancelled the message at {at}, before this was sent.",
    "operator_retry": "An operator asked at {at} to try it again; it is due now.",
    "clicked": "The user clicked the notification at {at}.",
    "superseded": (
        "A newer state of the same activity replaced it at {at}, before it was delivered."
    ),
    "left_out": (
        "A newer call of its activity left user {user} out at {at} (an activity's users "
        "are those of its latest call), so this older state was not sent to them."
    ),
    # the notification policy (flask_push.policy) writes these
    "opted_out": (
        "{Category} is off on {channel} for the user (they turned it off, or it is off "
        "until they turn it on), so it was not sent."
    ),
    "frequency_cap": (
        "The user already has {cap} of {category} pushed or due within 24 hours of it, as "
        "many as its daily cap allows."
    ),
    "quiet_hours": "It waits for the end of the user's quiet hours, at {next}.",
    "quiet_hours_expired": (
        "The user's quiet hours last until {next}, and its time to live ends at {at}, "
        "before that: it was not sent."
    ),
}

#: reasons of outcomes decided before anything went on the network: a ``failed`` or
#: ``gone`` delivery with one of them was never pushed (the daily cap does not count it)
NEVER_PUSHED: Final[tuple[str, ...]] = (
    "no_provider",
    "unsendable",
    # flask-push's own address check refused the endpoint: it did not connect
    "address_blocked",
    "provider_unusable",
    "target_dead",
    "target_changed_hands",
    "message_deleted",
)

#: the reasons the notification policy (:mod:`flask_push.policy`) records
POLICY_REASONS: Final[tuple[str, ...]] = (
    "opted_out",
    "frequency_cap",
    "quiet_hours",
    "quiet_hours_expired",
)

#: an attempt whose claim ended with no outcome written, found when it is claimed
#: again: what became of the push is not known
LOST_ATTEMPT = (
    "Attempt {attempts}: no outcome was written: the worker that claimed it stopped (or "
    "lost its database) first. The push may have reached {service} all the same, and then "
    "shows twice."
)

#: a push that waits, moved when the user changed their quiet hours
QUIET_HOURS_CHANGED = "The user changed their quiet hours at {at}: it is due at {next}."

#: a retry whose time falls in the user's quiet hours (a push of a category that is
#: not required): it waits for their end, as the push would have at send time
QUIET_HOURS_RETRY = (
    "Its next try, at {at}, would fall in the user's quiet hours: it waits for their end, "
    "at {next}."
)

#: such a retry, when the quiet hours last past its time to live
QUIET_HOURS_RETRY_EXPIRED = (
    "Its next try, at {at}, would fall in the user's quiet hours, which last until {next}, "
    "and its time to live ends at {ends}, before that: it is not tried again."
)

#: a push due before the user's quiet hours began that a worker reached after (a
#: fan-out's last pushes, a backlog, the workers down): it waits for their end, as it
#: would have at send time
QUIET_HOURS_CLAIMED = (
    "A worker reached it at {at}, after the user's quiet hours had begun, so it was held: "
    "it waits for their end, at {next}."
)

#: such a push, when the quiet hours last past its time to live
QUIET_HOURS_CLAIMED_EXPIRED = (
    "A worker reached it at {at}, after the user's quiet hours had begun; they last until "
    "{next}, and its time to live ends at {ends}, before that: it was not sent."
)

#: added to the first entry of a push that goes at once because the user's quiet hours
#: are in a zone this server's tz database does not know (a tzdata update removed it)
QUIET_HOURS_UNKNOWN_ZONE = (
    'The user\'s quiet hours were not applied: their time zone "{zone}" is not in this '
    "server's time zone database (they can choose their zone again in their settings)."
)

#: an operator's retry of what failed in a message scheduled for later: it waits for
#: the message's ``send_at``, as its other pushes do
RETRY_SCHEDULED = (
    "An operator asked at {at} to try it again; it is due at {next}, when the message is scheduled."
)

#: what an attempt event says of the answer
ATTEMPT = "Attempt {attempts}: {service} answered {answer}."
#: reason -> what an attempt event says when the push service gave no answer: it
#: could not be reached, flask-push refused the address itself or could not make
#: the push, or sending is suppressed and the push was recorded
UNANSWERED: Final[dict[str, str]] = {
    "unreachable": "Attempt {attempts}: {service} could not be reached: {answer}.",
    "no_answer": "Attempt {attempts}: {service} gave no answer flask-push could read: {answer}.",
    "address_blocked": "Attempt {attempts}: flask-push's address check {answer}.",
    "unsendable": "Attempt {attempts}: flask-push could not make the push: {answer}.",
    "recorded": (
        "Attempt {attempts}: flask-push's recorder (PUSH_SUPPRESS_SEND) kept the push and "
        "sent nothing."
    ),
}


#: the reasons of a retry for want of an answer: no connection, or none to read
UNANSWERED_RETRIES: Final[tuple[str, ...]] = ("unreachable", "no_answer")
#: the reasons of a push waiting for the time its push service asked for (or the
#: backoff chose) after a try it did not take
RETRIES: Final[tuple[str, ...]] = ("unavailable", "rate_limited", *UNANSWERED_RETRIES)
#: the HTTP status by which a push service says it is slowing this sender down
RATE_LIMITED_STATUS: Final = 429

#: what ``{Last}`` says of the last attempt: by the reason it had no answer, if so
_LAST: Final[dict[str, str]] = {
    "": "{Service} answered {answer} at {at}, attempt {attempts}",
    "unreachable": "flask-push could not reach {service} at {at}, attempt {attempts}: {answer}",
    "no_answer": (
        "{Service} gave no answer flask-push could read at {at}, attempt {attempts}: {answer}"
    ),
}


def clock(when: datetime) -> str:
    """A time as a sentence shows it: ``17:03 UTC``, with the date when not today."""
    if when.date() == datetime.now(timezone.utc).date():
        return f"{when:%H:%M} UTC"
    return f"{when:%Y-%m-%d %H:%M} UTC"


#: what a sender shortens in a push that is too large
SHORTEN = "the notification's body or data"


def too_large_values(limit: int, counted: str, *, activity: bool = False) -> dict[str, str]:
    """The ``{limit}`` and ``{shorten}`` of a ``too_large`` sentence: the provider's
    limit (``max_payload``, of what it counts: ``counted``) and what to shorten
    (a live activity's state rides in the payload too)."""
    shorten = f"{SHORTEN} or the activity's state" if activity else SHORTEN
    return {"limit": f"{limit:,} bytes of {counted}", "shorten": shorten}


def detail(reason: str, **values: Any) -> str:
    """The sentence of ``reason`` with ``values`` filled in (times as :func:`clock`)."""
    shown: dict[str, Any] = {
        "service": "the push service",
        "answer": "nothing",
        "target": "target",
        "kind": "push",
        "attempts": 1,
        "service_id": "",
        "next": "later",
        "at": "an unknown time",
        "how": "its provider's settings",
        "category": "this category",
        "channel": "this channel",
        "cap": "as many",
        "token": "Live Activity token",
        "user": "its user",
        "limit": "payload",
        "shorten": SHORTEN,
    }
    for name, value in values.items():
        if value is None:
            continue
        shown[name] = clock(value) if isinstance(value, datetime) else value
    worker = values.get("worker")
    # a worker found it: the process that queued it had the provider
    shown["worker"] = (
        f" in the worker process that claimed it ({worker}), though the process that "
        "queued it had one then"
        if worker
        else ""
    )
    shown["where"] = (
        " in that process's config (`flask push worker` and Celery workers need the app's "
        "PUSH_* settings)"
        if worker
        else ""
    )
    ttl = values.get("ttl")
    shown["ttl"] = f" of {ttl:,} s" if ttl is not None else ""
    asked = values.get("retry_after")
    shown["asked"] = f", no sooner than its Retry-After of {_asked(asked)} asked" if asked else ""
    if values.get("service_id"):
        shown["service_id"] = f" (its id for it: {values['service_id']})"
    service = str(shown["service"])
    shown["Service"] = service[:1].upper() + service[1:]
    category = str(shown["category"])
    shown["Category"] = category[:1].upper() + category[1:]
    last = _LAST.get(values.get("unanswered") or "", _LAST[""])
    shown["Last"] = last.format(**shown)
    return REASONS[reason].format(**shown)


#: the reasons whose sentence advises retrying what failed
RETRY_ADVISED: Final[tuple[str, ...]] = ("no_provider", "gave_up")

#: reasons of a ``failed`` delivery that a retry cannot help: it sends the same push
#: again, which is refused or cannot be made the same way. Any other (and an older
#: row's missing one) may pass later: the service is back, a key or a provider is
#: fixed. So a retry is offered unless it is known to be in vain. Reason -> what it
#: is, in words (the console's message page counts failures by these). Not
#: ``rejected``: besides a message refused as it is, it covers refusals that a fixed
#: setting lets through (APNs' topic, FCM's address), so a retry may help it.
RETRY_FUTILE: Final[dict[str, str]] = {
    "too_large": "too large for the push service",
    "unsendable": "could not be made into a push",
}

#: said after such a sentence once its message is cancelled: a retry of a cancelled
#: message sends none of it (:func:`flask_push.control.retry_failed`)
CANCELLED_SINCE = (
    "The message was cancelled since, so retrying what failed sends none of it: send "
    "it again as a new message."
)
#: why a retry of a cancelled message is refused (``message_cancelled``)
RETRY_CANCELLED = (
    "The message was cancelled, so none of it goes out again and nothing was retried: "
    "send it again as a new message."
)


def detail_of(
    status: str,
    reason: str | None,
    error: str | None,
    events: Sequence[Mapping[str, Any]],
    *,
    cancelled: bool = False,
) -> str | None:
    """The sentence that explains a delivery's status: its last telling event's,
    else its reason's, else the error recorded (rows older than timelines); with
    :data:`CANCELLED_SINCE` after advice to retry when its message is ``cancelled``
    (the advice was written when it failed)."""
    said = next(
        (
            str(event["detail"])
            for event in reversed(events)
            if event.get("what") in TELLING and event.get("detail")
        ),
        detail(reason) if reason in REASONS else error,
    )
    if cancelled and said and status == "failed" and reason in RETRY_ADVISED:
        return f"{said} {CANCELLED_SINCE}"
    return said


#: seconds a queued push may stay due, untaken, before its sentence says so: the
#: workers look for due pushes about every second, so a minute untouched means none
#: runs for this app, or they are far behind
OVERDUE_AFTER: Final = 60

#: added to the sentence of a queued push due that long ago that no worker holds:
#: its last event still says when it was to go ("due at", "tried again at"), a time
#: past, which reads as if all were well
OVERDUE = (
    "It has been due since {due} ({waited} ago) and no worker has taken it: no "
    "delivery worker is running for this app (`flask push worker`, or the process "
    "that runs the thread queue, stopped or was never started), or the workers are "
    "far behind (the console's overview and GET /health show the outbox)."
)


def _asked(seconds: float) -> str:
    """A Retry-After as a sentence says it: ``600 s``; a long one in days too,
    ``1,500,000 s (17.4 days)``, not ``1.5e+06 s``."""
    return f"{seconds:,.0f} s ({waited(seconds)})" if seconds >= 5400 else f"{seconds:g} s"


def waited(seconds: float) -> str:
    """A wait as a sentence says it: ``45 s``, ``39 min``, ``2.5 h``, ``3.0 days``
    (the console shows the outbox's oldest due push so too)."""
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def delivery_detail(delivery: Any, *, cancelled: bool = False) -> str | None:
    """A delivery's ``detail``, said alike wherever it shows (its message's deliveries
    and problems, its user's targets): a push a worker holds now is on its way, which
    its last event (the previous attempt's, or "queued") does not tell; one due for
    longer than :data:`OVERDUE_AFTER` that no worker holds says so after that event's
    sentence (:data:`OVERDUE`); else :func:`detail_of`. ``delivery`` has ``status``,
    ``reason``, ``error``, ``events``, ``lease_until`` and ``due_at`` (a mapped row
    or a selected one)."""
    now = datetime.now(timezone.utc)
    held_until = delivery.lease_until
    if delivery.status == "queued" and held_until is not None and held_until > now:
        return (
            "A worker took it and is sending it now; should that worker stop, another "
            f"takes it at {clock(held_until)}."
        )
    said = detail_of(
        delivery.status, delivery.reason, delivery.error, delivery.events or (), cancelled=cancelled
    )
    due = delivery.due_at
    if delivery.status == "queued" and due is not None:
        late = (now - due).total_seconds()
        if late > OVERDUE_AFTER:
            overdue = OVERDUE.format(due=clock(due), waited=waited(late))
            return f"{said} {overdue}" if said else overdue
    return said


def attempt_detail(reason: str | None = None, *, to: str | None = None, **values: Any) -> str:
    """The sentence of one attempt: who answered what (``reason``: the result's,
    which says when no answer came); ``to``, where the push went, when the target
    has more than one (a Live Activity's token or its device): "Attempt 1, to ...: "."""
    shown = {"service": "the push service", "answer": "nothing", "attempts": 1}
    shown.update({k: v for k, v in values.items() if v is not None})
    if to is not None:
        shown["attempts"] = f"{shown['attempts']}, {to}"
    return UNANSWERED.get(reason or "", ATTEMPT).format(**shown)


def event(what: str, at: datetime | str, text: str | None = None, **extra: Any) -> dict[str, Any]:
    """One timeline entry as it is stored: ``{"at", "what", "detail"?, ...}`` (``at``
    may come as its ISO text already, which a batch of outcomes computes once)."""
    if what not in EVENTS:
        raise ValueError(f"unknown event kind {what!r}")
    entry: dict[str, Any] = {"at": at if isinstance(at, str) else at.isoformat(), "what": what}
    if text is not None:
        entry["detail"] = text
    entry.update({k: v for k, v in extra.items() if v is not None})
    return entry
