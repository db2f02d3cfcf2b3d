"""sync: keeps each channel and its Zendesk Sell account in step.

- ``connection``: checking a channel's token and custom fields through ``crm`` and
  recording the outcome in ``store``, which switches sync on or off for the channel.
- ``engine``: one run of one channel (pull through the change feed, apply a batch in one
  store unit of work, write to Sell, push new leads) and the scheduler's jobs.

The decisions themselves (merge, link matching, caps, texts, schedule) are pure functions
in ``kuloo_daemon.rules``. May import ``services``, ``crm``, ``store`` (through
``Store.run``), ``rules`` and trio.
"""
