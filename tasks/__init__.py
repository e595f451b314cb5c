"""Makes this folder the package `unirep._bundled.tasks` (setup.py), so task cards ship inside unirep's wheel."""
