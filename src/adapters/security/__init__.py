"""Security adapters: argon2id password hashing (argon2-cffi) and JWT access tokens (pyjwt)."""
