"""Result store (SQLite), tables and output files."""
