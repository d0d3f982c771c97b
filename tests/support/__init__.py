"""Real parts for tests: a hostd process, plugin clients, loopback HTTP servers."""
