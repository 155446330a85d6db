-- Run once, by the postgres image on an empty data volume, as POSTGRES_USER (which owns the
-- result). POSTGRES_DB (churn) holds the serving tables: prediction log, API keys, monitoring
-- results. This second database is MLflow's tracking store and model registry.
CREATE DATABASE mlflow;
