"""shardbroker mirror: MirrorMaker 2's job (topics, records and group offsets from one Kafka
cluster to another), over the client library."""
