"""The aiohttp application: routes, middleware, auth and the CLI."""
