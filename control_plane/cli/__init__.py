"""``aetherctl``, the admin command line: feature registry commands and a local development stack."""
