"""Which models each series goes to: conditions over DICOM attributes, from config.toml."""
