"""Face networks: weights, detection, alignment, embedding and batching.

Nothing here knows about the database or HTTP: it turns pixels into faces.
"""
