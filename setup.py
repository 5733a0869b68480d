"""Only what pyproject.toml cannot say: the shipped models in models/ travel inside the wheel as the
`toolkit.models` package data (see zoo.MODELS_DIR), next to every package under toolkit/."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["toolkit", "toolkit.*"]), "toolkit.models", "toolkit.models.samples"],
      package_dir={"toolkit.models": "models"})
