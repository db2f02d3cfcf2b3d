"""control: the local admin interface of the daemon.

``protocol`` is sans-IO (no trio, asyncio or Textual) and shared with the TUI;
``server`` serves it on a Unix socket under trio; ``methods`` maps method names to use
cases in the store; ``client``/``ctl`` are the blocking client behind ``kuloo-ctl``.
"""
