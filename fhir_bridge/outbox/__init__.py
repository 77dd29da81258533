"""The delivery pipeline: outbox events to partners, in one package.

* ``routing``: outbox events -> one delivery row per (event, partner) that should receive it;
* ``payload``: the Bundle of a delivery, read from the store and built by ``mapping``;
* ``queue``: the delivery rows (status ``DeliveryStatus``): claim, lease, record, requeue;
* ``retry``: the pure ``RetryPolicy``: after an attempt, retry when, give up, or delivered;
* ``worker``: the loop only (claim, build, send, record), configured by one ``WorkerConfig``;
  what routes and what builds are injected by the command (``commands/deliveries.py``).

Events themselves (``store.outbox``: ``Event``, ``OutboxWriter``, ``EVENT_TYPES``) stay in the
store: services write them in the same transaction as the change they announce.
"""
