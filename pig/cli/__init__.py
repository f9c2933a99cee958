"""Console scripts above the packages they drive, and the one error wrapper they all use."""
