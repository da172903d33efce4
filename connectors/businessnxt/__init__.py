"""Businessnxt (Visma Business NXT, GraphQL) connector and sandbox.

- ``sandbox`` / ``sandbox_store`` / ``filters`` / ``schema``: the simulated ERP
  (a real graphql-core server on Starlette) that follows
  ``docs/contracts/businessnxt-api.md``.
- ``client``: async GraphQL client (OAuth2 client credentials, retries, limits).
- ``timezones``: server-local naive timestamps <-> UTC.
- ``poller``: incremental reads into ``businessnxt.<entity>.changes``.
- ``webhook``: signed TableChange receiver that publishes change events.
- ``writer``: applies ``WriteCommand`` batches (idempotent creates via origin stamps).
"""
