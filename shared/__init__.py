"""Code the three payment services share: settings, domain model and adapters."""
