"""``python -m trainer`` runs ``instructgie-train``."""
import sys

from .cli import main

sys.exit(main())
