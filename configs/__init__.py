"""Makes this folder the package `unirep._bundled.configs` (setup.py), so the presets ship inside unirep's wheel."""
