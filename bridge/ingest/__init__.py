"""The pure ingest core: gateway frames in, events and session outputs out (no I/O, no clock)."""
