"""The shardbroker command line."""
