"""What a run leaves: shards, the ledger and manifest publishing, token shards and the report."""
