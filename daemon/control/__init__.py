"""control: the local admin interface of the daemon.

``protocol`` is sans-IO (no trio, asyncio or Textual) and shared with the TUI;
``server`` serves it on a Unix socket under trio; ``methods`` maps method names to the
use cases (in ``sync`` and ``store``), run with the ``Services`` object; ``render`` turns
their typed results into the JSON documents; ``client``/``ctl`` are the blocking client
behind ``kuloo-ctl``. Only ``app`` (and ``cli``) import this package.
"""
