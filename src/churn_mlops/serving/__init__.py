"""The model server: FastAPI app, gateway functions, prediction log."""
