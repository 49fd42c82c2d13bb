"""Identity: SIWE login, sessions, DIDs and credentials (to come)."""
