"""Native plugin sources and the harness that drives a native worker (built and run at test time)."""
