"""cajex: multi-tenant architecture governance, isolated by PostgreSQL RLS."""

from pathlib import Path

__version__ = "0.1.0"

#: The repository root: db/ lives here, beside web/ and jobs/.
ROOT = Path(__file__).resolve().parent.parent
DB_DIR = ROOT / "db"
