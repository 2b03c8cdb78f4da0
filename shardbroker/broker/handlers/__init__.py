"""Request handlers: one module per Kafka API, each defining ``HANDLER = ApiHandler(...)``.

``broker.dispatch.discover`` imports every module of this package whose name does not start with
``_`` (those are shared helpers) and registers its ``HANDLER``: there is no list of APIs to keep
in step, and ApiVersions advertises exactly the APIs that have a module here, at the versions
the handler declares (intersected with the codec's). A handler is
``async def handle(ctx: RequestContext, request) -> response | None`` (None: no response, as
for Produce with acks=0); an exception it raises answers that request with
UNKNOWN_SERVER_ERROR (see ``ApiHandler.error_response`` for APIs whose responses carry errors
per topic) and never reaches the worker.

Control plane (metadata, topics, configs, cluster) reads the worker's metadata image and changes
things only through the controller channel; data plane (produce, fetch, offsets, producer ids)
goes through the worker's ``ReplicaManager``.
"""
