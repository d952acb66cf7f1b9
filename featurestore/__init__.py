"""The feature store: the schema, validated ingestion and point-in-time readers."""
