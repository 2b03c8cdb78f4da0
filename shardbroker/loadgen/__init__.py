"""Load generation for ``shardbroker perf``: Kafka-protocol producers and consumers (confluent-kafka,
so the figures are what users measure with, against any Kafka cluster), run in processes of their
own, and the statistics of what they did."""
