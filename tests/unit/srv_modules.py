"""Pigeon's Salt modules imported by path for unit tests, as Salt's loader would find them."""

import importlib.util
import pathlib

SALT_DIR = pathlib.Path(__file__).resolve().parents[2] / "srv" / "salt"


def load(relative_path, name):
    """The module at srv/salt/<relative_path>, imported fresh under ``name``."""
    spec = importlib.util.spec_from_file_location(name, SALT_DIR / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
