"""Dataset readers: each turns one source kind into :class:`detflow.data.formats.base.SourceScan`."""
