"""Where Feast keeps the features, as the materialize job and the model server both need to know.

This module imports nothing, so the server can read the online store's layout without the
feature store's configuration (settings, SQL URLs) or Feast.
"""

FEATURE_VIEW = "customers"  # the one feature view, holding every spec feature
ONLINE_DB = "online.db"  # the SQLite online store's file, in the feature repository's folder
LOOKUP_COLUMNS = ("feature_name", "value", "event_ts")  # what the server reads of a customer's rows


def online_table(project: str) -> str:
    """Feast's SQLite table of the feature view: a row per (customer, feature)."""
    return f"{project}_{FEATURE_VIEW}"


def lookup_index_sql(project: str) -> str:
    """The DDL of the index the materialize job adds to Feast's SQLite table.

    It holds the entity key and then every column the server reads, so a lookup by customer reads
    this index alone and never the table.
    """
    table = online_table(project)
    columns = ", ".join(("entity_key", *LOOKUP_COLUMNS))
    return f'CREATE INDEX IF NOT EXISTS "{table}_lookup" ON "{table}" ({columns})'
