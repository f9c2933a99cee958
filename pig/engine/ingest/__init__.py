"""Ingest: per-file work, the pipeline, the writer and its commits; local and Ray runners."""
