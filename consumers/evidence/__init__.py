"""Offline evidence for auditors: the bundle formats (``bundle``), building bundles from the
ledger database (``build``), and checking a bundle with public keys only (``check``, which
imports the pure core and ``bundle`` alone: no database, no Kafka, no HMAC key); exports of a
seq range with a signed manifest (``export_format``, ``export`` writes one from the database,
``export_check`` checks one offline, importing the core, ``bundle`` and ``export_format`` alone).

Nothing is imported here, so that importing ``check`` loads no driver.
"""
