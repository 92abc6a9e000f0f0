"""Pigeon's Salt modules imported by path for unit tests, as Salt's loader would find them."""

import importlib.util
import inspect
import pathlib

SALT_DIR = pathlib.Path(__file__).resolve().parents[2] / "srv" / "salt"


def load(relative_path, name):
    """The module at srv/salt/<relative_path>, imported fresh under ``name``."""
    spec = importlib.util.spec_from_file_location(name, SALT_DIR / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def utils_dunder(*modules):
    """
    ``__utils__`` as Salt's loader builds it from these utils modules (each loaded by ``load``).

    Like the loader, it holds ``<name>.<function>`` for the public functions defined in
    each module (its ``__virtualname__``, else its file name), never a class, an exception
    or a constant: a module that reaches one of those through ``__utils__`` fails here too.
    """
    functions = {}
    for module in modules:
        name = getattr(module, "__virtualname__", pathlib.Path(module.__file__).stem)
        for attr in getattr(module, "__load__", getattr(module, "__all__", dir(module))):
            func = getattr(module, attr)
            if attr.startswith("_") or not inspect.isfunction(func) or func.__module__ != module.__name__:
                continue
            functions[f"{name}.{attr}"] = func
    return functions


def load_with_utils(relative_path, name, *utils_paths):
    """``load(relative_path, name)`` with its ``__utils__`` made (by ``utils_dunder``) from the
    utils modules at these paths under srv/salt, as a minion gives them after saltutil.sync_all."""
    module = load(relative_path, name)
    module.__utils__ = utils_dunder(*(load(path, pathlib.Path(path).stem) for path in utils_paths))
    return module
