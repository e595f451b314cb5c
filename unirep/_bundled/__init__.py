"""unirep's data files as packages, for `importlib.resources` (read them through `unirep.resources`).

`unirep._bundled.tasks` and `unirep._bundled.configs` are the checkout's top-level `tasks/` and `configs/`
folders, mapped here by setup.py: edit them there, never copy them here.
"""
