"""Kafka's security model without I/O: principals, SASL mechanisms, SCRAM credentials, ACLs.

Pure logic, unit-testable with bytes: the broker's connection (broker/) drives the mechanisms and
asks the authorizer; the controller (control/) stores credentials and ACL bindings in its
metadata log; nothing here opens a socket or a file.
"""
