"""opscope: deploy services, watch them live and report on the business.

One package, one CLI (``opscope``) and one server process (``opscope serve``).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
