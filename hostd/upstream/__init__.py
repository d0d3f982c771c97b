"""Where handlers send their work: the HTTP client, the model backend, the credential store."""
