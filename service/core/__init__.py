"""The core both processes share: settings, logs, errors, contracts, store, bus, S3."""
