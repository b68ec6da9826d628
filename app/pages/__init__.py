"""HTML pages for people without an API key: the selfie form, the gallery, deleting one's data."""
