"""The on-disk format: Arrow IPC shards, their schema, writer, reader and manifest."""
