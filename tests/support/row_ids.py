"""Brings a table's generated ids next to the largest 32-bit integer, so that a test can write rows past it
in minutes instead of after two billion inserts."""

from __future__ import annotations

from sqlalchemy import Engine, text

from control_plane.db.schema import metadata

#: The largest value a 32-bit signed integer (PostgreSQL ``integer``, ``serial``) holds.
INT32_MAX = 2**31 - 1


def next_ids_just_below_int32_max(engine: Engine, table: str) -> None:
    """The next row inserted into ``table`` gets id ``INT32_MAX - 1``, the one after it ``INT32_MAX``, and
    the third is past 32 bits. PostgreSQL: the ``id`` column's sequence is moved on. SQLite gives a new
    row the highest rowid plus one, so the table's newest row (it must hold one) is renumbered
    ``INT32_MAX - 2``, with the rows that refer to it (foreign keys are checked at the commit)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence(:table, 'id'), :value)"),
                {"table": table, "value": INT32_MAX - 2},
            )
            return
        newest = connection.execute(text(f"SELECT max(id) FROM {table}")).scalar_one()
        assert newest is not None, f"{table} holds no row to renumber"
        moved = {"value": INT32_MAX - 2, "newest": newest}
        connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        connection.execute(text(f"UPDATE {table} SET id = :value WHERE id = :newest"), moved)
        for child in metadata.tables.values():
            for key in child.foreign_keys:
                if key.column.table.name == table:
                    column = key.parent.name
                    statement = f"UPDATE {child.name} SET {column} = :value WHERE {column} = :newest"
                    connection.execute(text(statement), moved)
