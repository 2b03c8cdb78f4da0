"""One partition's log on disk: segments, indexes, recovery, retention. Knows nothing of the network."""
