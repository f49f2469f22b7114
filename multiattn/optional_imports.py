"""Imports of what the library uses but does not install (`pip install 'multiattn[recipes]'`).

BLEU and chrF need sacreBLEU, the plots matplotlib: they are imported at first use, so
that `import multiattn` needs Keras and NumPy alone.
"""

import importlib


def require(module_name, needed_for):
    """Imports `module_name`, or raises an `ImportError` naming the extra to install.

    Args:
        module_name: The module to import, e.g. `"sacrebleu.metrics"`.
        needed_for: What needs it, for the message, e.g. `"multiattn.metrics' BLEU"`.

    Returns:
        The module.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        package = module_name.split(".")[0]
        raise ImportError(
            f"{needed_for} needs {package}: pip install 'multiattn[recipes]' "
            f"(or pip install {package})"
        ) from error
