"""Hooks for code whose chat requests ``tg.instrument`` cannot reach (a framework that
builds its own client): :mod:`tokenguard.integrations.httpx` guards any httpx client."""
