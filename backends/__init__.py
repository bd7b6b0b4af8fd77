"""Built-in backends. Each sub-package is a plugin registered through the ``enginebench.backends`` entry points
(pyproject.toml), exactly like a third-party backend; the harness never imports these modules by name."""
