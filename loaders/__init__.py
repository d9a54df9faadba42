"""music-elt loaders: extract RDS tables and S3 stream files, land them, load the warehouse."""

__version__ = "0.1.0"
