"""The one exception users can cause; the CLI prints it in one line and exits non-zero."""


class SanetError(Exception):
    """A problem the user can fix (bad path, wrong shape, stale engine, missing package)."""


def require(module_name, install_hint):
    """Import an optional dependency or raise a SanetError saying what to install."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise SanetError("{} is required for this: {}".format(module_name, install_hint)) from exc
