"""The worker: consumes run requests, streams feeds from S3, validates, loads PostgreSQL."""
