"""A backend module whose import fails (its engine is not installed)."""
import fancy_engine_that_is_not_installed  # noqa: F401


class Backend:
    pass
