"""The data layer: the dataset contract, sources, validation and the versioned lake."""
