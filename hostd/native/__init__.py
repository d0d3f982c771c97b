"""Native plugins out of process (PROTOCOL §14): an unmodified CLIProxyAPI plugin library in a worker.

- :mod:`hostd.native.worker` is the worker process (``python -m hostd.native.worker PATH.so``),
  built from :mod:`~hostd.native.abi`, :mod:`~hostd.native.connection`, :mod:`~hostd.native.envelopes`,
  :mod:`~hostd.native.plugin_calls`, :mod:`~hostd.native.host_calls` and :mod:`~hostd.native.rawjson`.
  All of it is standard library only and never imports hostd's daemon modules: it is started once
  per plugin (and again after every crash), so it must be cheap, and nothing in it may depend on
  the daemon's event loop.
- :mod:`hostd.native.driver` is ``hostd run --native``'s child supervisor (it runs in the daemon).
- :mod:`hostd.native.naming` derives the plugin id from the library's file name as the proxy does.
- :mod:`hostd.native.supervisor` holds the restart policy and the registration replay that
  ``hostd run --native`` drives.

Nothing in this package is public API; the public surface is ``hostd run --native``.
"""

# The worker's stderr line that carries a load error, in the proxy's words, right before it exits 1
# (it never sends hostd.hello then). ``supervisor.load_error`` finds it in the worker's stderr.
LOAD_ERROR_PREFIX = "hostd native worker: load failed: "

# The worker exits with this code when the library cannot be loaded (the proxy's loader fails the
# same way: ``hostd run`` exits 1 with the proxy's words).
LOAD_ERROR_EXIT = 1
