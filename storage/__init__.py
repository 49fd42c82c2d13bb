"""Storage engines, UnixFS/CAR codecs, pins and the metadata store."""
