"""``python -m shoal.cli`` (what the end-to-end tests run)."""

from shoal.cli import main

main()
