"""Spending: prices per model, and budgets shared through Redis (see :mod:`._prices`,
:mod:`._shared`; :mod:`tokenguard._budget` holds the budget itself)."""
