"""The cluster metadata every process shares: the image of topics, partitions and placement."""
