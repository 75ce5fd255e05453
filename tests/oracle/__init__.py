"""The slow, obvious implementations the tests compare the package against. They import nothing from
``midlevel_fast`` (CI checks it with ``../shared/tools/import_graph.py``), so a bug in the package cannot hide
in its own oracle."""
