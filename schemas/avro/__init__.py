"""Avro schema files (``*.avsc``) shipped with the package."""
