"""sync: keeps each channel and its Zendesk Sell account in step.

So far it owns the channel connection (``connection``): checking a channel's token and
custom fields through ``crm`` and recording the outcome in ``store``, which is what
switches sync on or off for the channel. The sync engine (pull, three-way merge, push)
will live here too. Receives the ``Services`` object; may import ``services``, ``crm``,
``store`` (through ``Store.run``), the base modules and trio; never ``control``.
"""
