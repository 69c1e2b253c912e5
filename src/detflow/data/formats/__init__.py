"""Dataset readers: each turns one source kind into a
:class:`detflow.data.formats.base.SourceScan`."""
