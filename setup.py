"""Package layout (everything else is in pyproject.toml): unirep's code, plus the top-level `tasks/` and `configs/`
folders shipped inside the package as `unirep._bundled.tasks` and `unirep._bundled.configs`.

The folders stay where people read and edit them; package_dir maps them into the wheel (and, for an editable
install, points those packages at the checkout), and `unirep.resources` finds them with importlib.resources.
This lives here because pyproject.toml's `packages.find` cannot add packages that package-dir maps elsewhere.
"""

from setuptools import find_packages, setup

BUNDLED = {"unirep._bundled.tasks": "tasks", "unirep._bundled.configs": "configs"}
# Every kind of file those folders hold; tests/test_wheel_install.py fails when one is left out of the wheel.
BUNDLED_FILES = ["**/*.yaml", "**/*.json", "**/*.md"]

setup(
    packages=[*find_packages(include=["unirep*"]), *BUNDLED],
    package_dir=BUNDLED,
    package_data={"unirep.leaderboard": ["templates/*.j2"], **{package: BUNDLED_FILES for package in BUNDLED}},
)
