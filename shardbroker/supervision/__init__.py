"""Process supervision: the supervisor loop, its pure policy, the worker process main, heartbeats."""
