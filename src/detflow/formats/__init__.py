"""Dataset readers: each turns one source kind into :class:`detflow.formats.base.SourceScan`."""
