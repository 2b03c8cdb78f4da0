"""Configuration with Kafka's names: one table of rows per scope, and the typed values read from them.

- ``config_def``: the row type (``ConfigKey``: name, type, default, validator, update mode, doc,
  reader), the table (``ConfigDef``) and the validators; ``ConfigError``.
- ``log_config``: the topic configs' table (``TOPIC_CONFIGS``, Kafka's TopicConfig) and one
  partition's typed values (``LogConfig``).
- ``broker_properties``: the broker properties' table (``BROKER_CONFIGS``), topic-config synonyms
  included.
- ``broker_config``: ``BrokerConfig``, loaded from TOML and flags, validated against the table.

Two tables rather than one with a scope column: a topic config is validated per topic whenever
CreateTopics/AlterConfigs runs, a broker property once at start, and each names its own rows.
"""
