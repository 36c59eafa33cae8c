"""Alembic environment of the state store: always run in code by ``ProvisioningState.open`` on a connection it
holds inside a locked transaction (see ``scim_pipeline.sync.state._migrate``)."""

from __future__ import annotations

from alembic import context

from scim_pipeline.sync.state.schema import metadata

connection = context.config.attributes["connection"]
# render_as_batch: SQLite alters a table by copying it, which Alembic's batch mode does for us.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
