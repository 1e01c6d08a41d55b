"""In-memory adapters: for tests, for embedding, and as the reference behaviour of each port."""
