"""Storage: the SQLite object store (global resourceVersion, event log) and the watch hub
that fans its events out to REST and gRPC watchers. Sans-I/O apart from SQLite; nothing here
knows about HTTP or gRPC."""
