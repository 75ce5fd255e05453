"""The slow, obvious implementations the tests compare the package against. They import nothing from
``midlevel_fast`` (a contract of ``[tool.importlinter]`` in ``pyproject.toml``, checked by CI), so a bug in the
package cannot hide in its own oracle."""
