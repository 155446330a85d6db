"""Batch scoring of the whole customer base: locally in Arrow batches, or on Apache Spark."""
