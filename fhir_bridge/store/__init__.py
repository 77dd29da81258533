"""Persistence: SQLAlchemy models, the versioned resource store, its search index, migrations."""
