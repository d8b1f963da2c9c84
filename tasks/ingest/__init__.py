"""Reading inputs into documents: JSONL, Parquet, text and WARC readers, and HTML extraction
in a worker process."""
