"""The feature store (Feast): customer features by id online, point-in-time training sets offline."""
