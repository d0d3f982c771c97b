"""Remote clients the handlers send their work to: ``http_client`` (``host.http.*``) and
``model_backend`` (``host.model.*``, the proxy's HTTP API), on one network stack in the
private ``_net`` package. Each client translates the stack's exceptions in one function."""
